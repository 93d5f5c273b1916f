"""The word lists behind the bundled sample data (`sample_data.py` turns them into descriptions).

Categories are narrow (hiking backpacks, not "outdoor gear") so that every feature, use and material
fits every product noun of its category: a generated description stays coherent English. Lists are
`|`-separated strings to keep 24 categories readable on a few screens; materials are
`material=what it does for you` so a sentence can state the benefit. Specs are
`(attribute key, phrase with {n}, values)`. Changing anything here changes the bundled file:
regenerate it with `python -m trainables.sample_data` (a test checks the two agree; the
tiny model's cache key follows the file, so it is rebuilt too).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    name: str
    nouns: str
    materials: str
    features: str
    uses: str
    audiences: str
    specs: tuple[tuple[str, str, range | tuple[int, ...]], ...]
    variants: str
    care: str
    consumable: bool = False  # gets a satisfaction guarantee instead of a warranty


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Hiking Backpacks",
        "Backpack|Daypack|Trail Pack",
        "ripstop nylon=sheds light rain and resists snags|recycled polyester=keeps the weight down without feeling flimsy|waxed canvas=ages beautifully and repels moisture|high-tenacity Cordura=stands up to rough granite and brush",
        "a padded hip belt that spreads the load|a ventilated mesh back panel that keeps you cool|an integrated rain cover tucked into the base|a sleeve for a three-liter hydration reservoir|side compression straps that stabilize half-empty loads|a zippered lid pocket for snacks and maps|trekking pole loops on the front panel|an adjustable sternum strap with a built-in whistle|a front stretch pocket for a wet jacket",
        "weekend hikes|long day trips on steep trails|hut-to-hut treks|daily commutes by bike|travel days with a laptop|family outings to the lake",
        "first-time hikers|ultralight enthusiasts|parents carrying gear for the whole family|commuters who walk to work|travelers who hate checking bags",
        (
            ("capacity_l", "a {n}-liter main compartment", range(18, 46)),
            ("weight_g", "a total weight of just {n} grams", range(600, 1601, 10)),
            ("torso_cm", "an adjustable torso length of up to {n} centimeters", range(45, 56)),
        ),
        "forest green|slate gray|burnt orange|deep navy|desert sand",
        "Brush off dried mud and hand wash it with mild soap when needed.|Let it air dry fully before storing it to prevent mildew.",
    ),
    Category(
        "Camping Tents",
        "Tent|Dome Tent|Trekking Tent",
        "silicone-coated nylon=sheds rain and packs down small|polyester taffeta=holds its shape when wet|aluminum poles=keep the structure light and strong|cotton canvas=breathes well and stays cool in summer heat",
        "two doors so nobody climbs over anyone at night|a full-coverage rainfly with taped seams|color-coded clips that make pitching quick|large mesh panels for stargazing and airflow|two vestibules for boots and packs|interior pockets for headlamps and phones|a gear loft that hangs from the ceiling|reflective guylines that are easy to spot after dark|a footprint that keeps the floor dry",
        "backpacking trips|car camping weekends|music festivals|summer nights in the backyard|alpine camps above the tree line|canoe trips",
        "couples who camp together|families with young kids|solo backpackers|scout troops|festival goers",
        (
            ("sleeps", "room for {n} people", range(1, 5)),
            ("weight_g", "a packed weight of {n} grams", range(1100, 4201, 50)),
            ("peak_height_cm", "a peak height of {n} centimeters", range(95, 191, 5)),
        ),
        "olive green|sunset orange|stone gray|sky blue|sand beige",
        "Pitch it at home once to dry it completely after a wet trip.|Store it loosely in a cool place rather than tightly packed.",
    ),
    Category(
        "Chef's Knives",
        "Chef's Knife|Santoku|Kitchen Knife",
        "German stainless steel=holds a keen edge and resists rust|Damascus steel=combines hardness with a striking layered pattern|high-carbon Japanese steel=takes a razor-sharp edge|powder steel=keeps its edge through months of daily prep",
        "a full tang for balance and control|an ergonomic pakkawood handle|a hand-sharpened 15-degree edge|a bolster that protects your fingers|a granton edge that keeps slices from sticking|a magnetic wooden sheath|a subtle finger guard at the heel|a satin finish that hides fine scratches|a tapered spine for precise rocking cuts",
        "dicing onions|slicing tomatoes paper-thin|breaking down a whole chicken|weeknight meal prep|mincing herbs and garlic|carving the holiday roast",
        "home cooks|culinary students|professional chefs|anyone upgrading from a cheap knife block|newlyweds setting up a kitchen",
        (
            ("blade_cm", "a {n}-centimeter blade", range(15, 25)),
            ("weight_g", "a weight of {n} grams", range(150, 261, 5)),
            ("hardness_hrc", "a hardness of {n} HRC", range(56, 63)),
        ),
        "a black pakkawood handle|an olive wood handle|a walnut handle|a matte black finish|a hammered finish",
        "Hand wash and dry it right away, because the dishwasher dulls any blade.|Hone it every few uses and sharpen it once or twice a year.",
    ),
    Category(
        "Frying Pans",
        "Frying Pan|Skillet|Fry Pan",
        "tri-ply stainless steel=heats evenly from the center to the rim|cast iron=holds heat for a perfect sear|hard-anodized aluminum=heats up fast and resists warping|carbon steel=builds a natural nonstick patina over time",
        "a ceramic nonstick coating free of PFAS|a stay-cool riveted handle|a flared rim for drip-free pouring|an induction-ready base|a tempered glass lid with a steam vent|a helper handle for lifting when it is full|measurement marks etched inside|a pre-seasoned surface that is ready out of the box|a hanging loop on the handle",
        "searing steaks|flipping pancakes|weeknight stir-fries|frying eggs without sticking|one-pan pasta dinners|roasting vegetables in the oven",
        "busy parents|new cooks|weekend brunch hosts|small households|anyone cooking on induction",
        (
            ("diameter_cm", "a {n}-centimeter cooking surface", range(20, 33, 2)),
            ("oven_safe_c", "oven safety up to {n} degrees Celsius", range(200, 261, 10)),
            ("weight_g", "a weight of {n} grams", range(900, 2901, 50)),
        ),
        "graphite gray|cream white|sage green|brushed silver|matte black",
        "Let it cool before washing to protect the surface.|Use wooden or silicone utensils to keep it looking new.",
    ),
    Category(
        "Coffee Makers",
        "Coffee Maker|Drip Brewer|Coffee Machine",
        "brushed stainless steel=looks sharp and wipes clean|BPA-free plastic=keeps it light and affordable|borosilicate glass=resists thermal shock|double-wall steel=keeps coffee hot for hours without a hot plate",
        "a programmable timer so coffee is ready when you wake up|a showerhead that saturates the grounds evenly|a bloom cycle that brings out sweeter flavors|a removable water tank with clear markings|a pause-and-pour function|a reusable gold-tone filter|a one-touch descaling reminder|a thermal carafe that keeps coffee hot for hours|a small-batch setting for one or two cups",
        "early mornings before work|weekend brunches|office kitchens|hosting friends after dinner|brewing a full carafe for guests|slow Sunday mornings",
        "coffee lovers|shared households|small offices|people who want cafe flavor at home|early risers",
        (
            ("cups", "a capacity of {n} cups", range(4, 13)),
            ("watts", "a {n}-watt heater", range(900, 1501, 50)),
            ("brew_minutes", "a full carafe in about {n} minutes", range(5, 10)),
        ),
        "matte black|brushed steel|cream white|copper trim|charcoal gray",
        "Descale it every month or two if you have hard water.|Wash the carafe and filter basket in warm soapy water.",
    ),
    Category(
        "Blenders",
        "Blender|Countertop Blender|Personal Blender",
        "Tritan plastic=resists stains and rarely cracks|stainless steel blades=crush ice without dulling|glass=never picks up odors|die-cast metal=keeps the base steady at full speed",
        "a variable speed dial|a pulse button for chunky salsas|preset programs for smoothies and soups|a tamper that pushes ingredients toward the blades|a self-cleaning cycle|a travel lid that turns the cup into a bottle|overload protection that guards the motor|a vented lid for hot liquids|non-slip feet",
        "morning smoothies|frozen margaritas|silky soups|homemade nut butters|baby food|protein shakes after the gym",
        "health-conscious cooks|busy commuters|new parents|athletes|people with small kitchens",
        (
            ("watts", "a {n}-watt motor", range(600, 1501, 50)),
            ("jar_ml", "a {n}-milliliter jar", range(600, 2001, 100)),
            ("speeds", "{n} speed settings", range(3, 11)),
        ),
        "matte black|stainless steel|ocean blue|white|berry red",
        "Rinse the jar right after use so nothing dries on.|Run it with warm water and a drop of soap for a quick clean.",
    ),
    Category(
        "Office Chairs",
        "Office Chair|Task Chair|Desk Chair",
        "breathable mesh=keeps you cool during long sessions|top-grain leather=softens with age|recycled fabric=feels soft and resists pilling|a reinforced nylon base=handles daily use without creaking",
        "adjustable lumbar support|4D armrests that move in every direction|a synchro-tilt mechanism that follows your movement|a seat-depth slider|a headrest you can raise or remove|smooth-rolling casters that are safe on hardwood|a tilt lock with three positions|a waterfall seat edge that eases pressure on your legs|a tool-free assembly design",
        "long workdays at home|gaming sessions|studying for exams|busy open-plan offices|video calls|late-night writing",
        "remote workers|students|gamers|tall users|anyone with lower back pain",
        (
            ("max_load_kg", "a weight capacity of {n} kilograms", range(110, 161, 5)),
            ("seat_height_cm", "a seat height of up to {n} centimeters", range(50, 59)),
            ("recline_deg", "a recline of up to {n} degrees", range(110, 136, 5)),
        ),
        "charcoal gray|black|light gray|navy blue|cognac brown",
        "Vacuum the seat now and then and wipe the frame with a damp cloth.|Check the bolts after the first month and tighten them if needed.",
    ),
    Category(
        "Pillows",
        "Pillow|Sleep Pillow|Bed Pillow",
        "shredded memory foam=adapts to your shape without going flat|organic cotton=feels cool and soft against the skin|down alternative fill=gives a lofty feel without allergens|natural latex=springs back and stays supportive",
        "a removable zip cover|adjustable fill so you can set the height|a cooling gel layer|a breathable bamboo-derived cover|a contoured shape that cradles the neck|double-stitched seams|a hypoallergenic liner|a gusseted edge that keeps its loft|a storage bag for travel",
        "a good night's sleep|afternoon naps|reading in bed|long flights|guest rooms|recovering from neck strain",
        "side sleepers|back sleepers|hot sleepers|allergy sufferers|anyone who wakes up with a stiff neck",
        (
            ("width_cm", "a width of {n} centimeters", range(50, 76, 5)),
            ("fill_g", "{n} grams of fill", range(700, 1401, 50)),
            ("loft_cm", "a loft of {n} centimeters", range(10, 17)),
        ),
        "white|soft gray|ivory|pale blue|natural oat",
        "Wash the cover on a gentle cycle and let it dry flat.|Fluff it every morning to keep the fill even.",
    ),
    Category(
        "Desk Lamps",
        "Desk Lamp|Task Lamp|Reading Lamp",
        "aluminum=dissipates heat and stays light|weighted steel=keeps the base steady|solid oak=adds warmth to any desk|matte ABS=resists fingerprints",
        "five color temperatures from warm to daylight|stepless dimming|a USB-C charging port in the base|a touch-sensitive control strip|a flicker-free LED panel|an auto-off timer|a swing arm that reaches across a wide desk|a memory function that recalls your last setting|a clamp mount that saves desk space",
        "late-night reading|detailed hobby work|home office video calls|homework|drafting and sketching|bedside reading",
        "students|designers|remote workers|hobbyists who build models|avid readers",
        (
            ("lumens", "a brightness of {n} lumens", range(400, 1201, 50)),
            ("watts", "a power draw of only {n} watts", range(6, 15)),
            ("reach_cm", "a reach of {n} centimeters", range(35, 81, 5)),
        ),
        "matte black|white|silver|warm brass|sage green",
        "Dust it with a soft dry cloth.|Unplug it before cleaning the panel.",
    ),
    Category(
        "Wireless Headphones",
        "Headset|Wireless Headset|Over-Ear Headset",
        "memory foam cushions=feel comfortable for hours|lightweight aluminum=keeps the headband strong|soft protein leather=seals out noise|recycled plastic=keeps the weight low",
        "active noise cancellation|a transparency mode for conversations|multipoint pairing with two devices|a fast-charge feature that gives hours of play from a few minutes|touch controls on the ear cup|a foldable design with a hard case|a detachable cable for wired listening|beamforming microphones for clear calls|an app with a custom equalizer",
        "long flights|focused work in noisy offices|daily commutes|late-night gaming|podcasts on the go|studying in busy libraries",
        "frequent travelers|commuters|students|music lovers|remote workers",
        (
            ("battery_h", "up to {n} hours of battery life", range(20, 61, 5)),
            ("weight_g", "a weight of {n} grams", range(180, 321, 5)),
            ("driver_mm", "{n}-millimeter drivers", range(30, 51, 2)),
        ),
        "midnight black|silver|sand|navy|forest green",
        "Wipe the cushions with a slightly damp cloth.|Store it in the case to protect the hinges.",
    ),
    Category(
        "Portable Speakers",
        "Speaker|Portable Speaker|Wireless Speaker",
        "a rugged silicone shell=absorbs bumps and drops|woven fabric=keeps the sound clear|anodized aluminum=resists scratches|recycled plastic=reduces its footprint",
        "waterproofing to the IP67 standard|a built-in strap for hanging from a branch|stereo pairing with a second speaker|a passive radiator for deeper bass|a speakerphone for hands-free calls|a power bank function|a party mode that links many speakers|a design that floats in the pool|dust-proof buttons",
        "beach days|pool parties|camping trips|backyard barbecues|singing in the shower|picnics in the park",
        "outdoor adventurers|students in dorms|music lovers|families|anyone who hosts",
        (
            ("battery_h", "up to {n} hours of playback", range(10, 25)),
            ("watts", "{n} watts of output", range(10, 41, 5)),
            ("range_m", "a wireless range of {n} meters", range(10, 41, 5)),
        ),
        "black|teal|coral red|sand|camo green",
        "Rinse off sand or salt water with fresh water.|Close the port cover before it goes near water.",
    ),
    Category(
        "Phone Cases",
        "Phone Case|Slim Case|Rugged Case",
        "shock-absorbing TPU=cushions drops|polycarbonate=keeps the case thin and stiff|vegan leather=develops a soft sheen|plant-based bioplastic=composts at the end of its life",
        "raised edges around the camera|air-cushioned corners|MagSafe-compatible magnets|a card slot on the back|a built-in kickstand|a grippy textured side|precise cutouts for every port|an antimicrobial coating|a lanyard hole",
        "everyday carry|outdoor adventures|busy commutes|wireless charging|watching videos on the go|work on job sites",
        "people who drop their phones|minimalists|outdoor workers|parents|anyone who wants a slim profile",
        (
            ("drop_m", "drop protection up to {n} meters", range(2, 5)),
            ("thickness_mm", "a profile only {n} millimeters thick", range(1, 5)),
            ("weight_g", "a weight of {n} grams", range(18, 61, 2)),
        ),
        "clear|black|lavender|olive|blush pink",
        "Remove it now and then and wipe both sides with a damp cloth.|Let it dry fully before putting it back on.",
    ),
    Category(
        "Mechanical Keyboards",
        "Keyboard|Mechanical Keyboard|Compact Keyboard",
        "a CNC-machined aluminum case=feels solid and eliminates flex|PBT keycaps=resist shine|doubleshot ABS keycaps=keep legends crisp|a gasket-mounted plate=gives a softer typing feel",
        "hot-swappable switches|per-key RGB backlighting|a volume knob|wireless and wired modes|sound-dampening foam|fully programmable keys|adjustable feet with two angles|a detachable USB-C cable|a compact layout that frees up desk space",
        "programming|competitive gaming|writing long documents|office work|data entry|streaming",
        "programmers|writers|gamers|keyboard enthusiasts|anyone who types all day",
        (
            ("keys", "{n} keys", (61, 68, 75, 87, 104)),
            ("battery_h", "up to {n} hours of wireless use", range(40, 201, 10)),
            ("weight_g", "a weight of {n} grams", range(600, 1801, 50)),
        ),
        "a white and gray colorway|black|retro beige|pastel blue|a frosted translucent case",
        "Use a soft brush to clear dust between the keys.|Pull the keycaps now and then for a deeper clean.",
    ),
    Category(
        "Smart Thermostats",
        "Thermostat|Smart Thermostat|Wi-Fi Thermostat",
        "a glass display=makes readings easy from across the room|a brushed metal ring=looks at home on any wall|a matte polymer body=blends into the background|a recycled aluminum housing=stays cool to the touch",
        "learning schedules that adapt to your routine|remote control from your phone|geofencing that saves energy when you leave|a room sensor for even temperatures|monthly energy reports|voice assistant support|filter change reminders|a humidity sensor|an easy-fit wall plate",
        "saving energy|keeping the nursery comfortable|vacation homes|cold winter mornings|managing heat in a rental|multi-story houses",
        "homeowners|renters who can install simple devices|families|energy-conscious households|landlords",
        (
            ("display_cm", "a {n}-centimeter display", range(5, 10)),
            ("sensors", "support for up to {n} room sensors", range(4, 33, 4)),
            ("savings_pct", "average heating savings of about {n} percent", range(8, 16)),
        ),
        "white|black|stainless steel|polished brass|mirror black",
        "Wipe the display with a dry microfiber cloth.|Install updates when the app prompts you.",
    ),
    Category(
        "Yoga Mats",
        "Yoga Mat|Exercise Mat|Studio Mat",
        "natural tree rubber=grips even when you sweat|TPE foam=is light and easy to carry|cork=stays grippy and naturally resists odors|jute=gives a firm, textured surface",
        "alignment lines printed on the surface|a carrying strap|a closed-cell surface that keeps sweat out|extra cushioning for sensitive knees|a non-slip textured underside|a reversible design with two textures|a moisture-wicking top layer|rounded corners that do not curl|a design that lies flat right after unrolling",
        "hot yoga|pilates|home workouts|stretching after a run|meditation|yoga on the road",
        "beginners|experienced yogis|physical therapy patients|travelers|people with sensitive joints",
        (
            ("thickness_mm", "a thickness of {n} millimeters", range(2, 9)),
            ("length_cm", "a length of {n} centimeters", range(173, 201)),
            ("weight_g", "a weight of {n} grams", range(900, 2601, 50)),
        ),
        "deep purple|ocean teal|sand|charcoal|sunrise orange",
        "Wipe it down with water and a little mild soap after practice.|Keep it out of direct sunlight to protect the surface.",
    ),
    Category(
        "Running Shoes",
        "Running Shoe|Trainer|Road Shoe",
        "engineered mesh=breathes well on hot runs|nitrogen-infused foam=returns energy with every stride|recycled knit=wraps the foot like a sock|a carbon-fiber plate=propels you forward",
        "a rocker geometry that rolls you through each step|a padded heel collar|a gusseted tongue|reflective details for early runs|a durable rubber outsole|a wide toe box|a moderate heel-to-toe drop for daily training|a removable insole for orthotics|a secure lacing system",
        "daily training runs|race day|long Sunday runs|tempo workouts|treadmill sessions|long shifts on your feet",
        "beginner runners|marathoners|runners with wide feet|nurses and teachers|casual joggers",
        (
            ("weight_g", "a weight of {n} grams", range(200, 321, 5)),
            ("drop_mm", "a {n}-millimeter drop", range(4, 11)),
            ("stack_mm", "a {n}-millimeter stack height", range(28, 41)),
        ),
        "white and volt|black|sky blue|coral|gray with orange accents",
        "Loosen the laces and let them air dry away from the heater.|Rotate them with a second pair to extend their life.",
    ),
    Category(
        "Rain Jackets",
        "Rain Jacket|Rain Shell|Waterproof Jacket",
        "a three-layer waterproof membrane=keeps rain out and lets sweat escape|recycled nylon=packs down small|a PFC-free water-repellent finish=beads off water|a soft tricot lining=feels good against bare arms",
        "taped seams|an adjustable hood that turns with your head|pit zips for ventilation|a stowable design that packs into its own pocket|hand pockets placed above a hip belt|adjustable cuffs|a drop hem that covers your back|a two-way front zipper|a chin guard that prevents chafing",
        "rainy commutes|hiking in the mountains|travel|dog walks|music festivals|cycling to work",
        "hikers|city commuters|travelers|dog owners|anyone living in a rainy climate",
        (
            ("weight_g", "a weight of {n} grams", range(230, 521, 10)),
            ("waterproof_mm", "a waterproof rating of {n} millimeters", (10000, 15000, 20000, 28000)),
            (
                "breathability_g",
                "breathability of {n} grams per square meter per day",
                (10000, 15000, 20000, 25000),
            ),
        ),
        "yellow|black|navy|olive|red",
        "Wash it with a technical cleaner and tumble dry on low to refresh the finish.|Hang it to dry after a wet day.",
    ),
    Category(
        "Face Moisturizers",
        "Moisturizer|Face Cream|Day Cream",
        "hyaluronic acid=draws moisture into the skin|ceramides=help restore the skin barrier|squalane=softens without feeling greasy|niacinamide=evens out skin tone",
        "a fragrance-free formula|broad-spectrum SPF 30|a lightweight gel texture|an airless pump that protects the formula|a non-comedogenic formula|a rich overnight texture|a recyclable glass jar|a vegan, cruelty-free formula|a dermatologist-tested formula",
        "daily morning routines|dry winter months|the hours after shaving|prepping skin before makeup|overnight repair|long flights",
        "people with sensitive skin|anyone with dry skin|oily and combination skin types|men who want a simple routine|teens",
        (
            ("volume_ml", "{n} milliliters of product", range(30, 101, 10)),
            ("shelf_months", "a shelf life of {n} months after opening", range(6, 13)),
        ),
        "an unscented formula|a light cucumber scent|a travel size|a refill pouch|a tinted version",
        "Apply it to clean skin with gentle upward strokes.|Store it away from heat and direct sunlight.",
        consumable=True,
    ),
    Category(
        "Baby Strollers",
        "Stroller|Travel Stroller|Jogging Stroller",
        "a lightweight aluminum frame=folds easily|breathable mesh=keeps baby cool|water-resistant fabric=wipes clean|foam-filled tires=never go flat",
        "a one-hand fold|a reclining seat with several positions|an extendable canopy with a peekaboo window|a large storage basket|all-wheel suspension|a five-point harness|a height-adjustable handlebar|a foot-operated brake|car seat compatibility",
        "city errands|park walks|travel through airports|jogging|shopping trips|daily walks to daycare",
        "new parents|city families|grandparents|parents who run|families who travel",
        (
            ("weight_kg", "a weight of {n} kilograms", range(6, 14)),
            ("max_child_kg", "a capacity of up to {n} kilograms", range(15, 26)),
            ("basket_l", "a {n}-liter basket", range(8, 31, 2)),
        ),
        "black|charcoal|olive|navy|light gray",
        "Remove the seat fabric and wash it on a gentle cycle.|Wipe the frame and check the wheels every few weeks.",
    ),
    Category(
        "Dog Beds",
        "Dog Bed|Pet Bed|Orthopedic Dog Bed",
        "orthopedic memory foam=supports aging joints|chew-resistant canvas=stands up to teething puppies|faux sheepskin=feels warm and cozy|a waterproof lining=protects the foam from accidents",
        "a removable, machine-washable cover|raised bolsters that double as a pillow|a non-skid base|a waterproof liner|a calming round shape|a self-warming layer|a cooling gel insert|a zipper hidden from curious teeth|a low entry for older dogs",
        "long naps|crate training|car rides|recovering after surgery|chilly nights|lazy afternoons in the sun",
        "senior dogs|large breeds|anxious pups|puppies|cats that steal the dog's bed",
        (
            ("length_cm", "a length of {n} centimeters", range(60, 121, 5)),
            ("max_dog_kg", "support for dogs up to {n} kilograms", range(10, 51, 5)),
            ("foam_cm", "{n} centimeters of foam", range(5, 13)),
        ),
        "gray|chocolate brown|navy|cream|forest green",
        "Shake out hair daily and wash the cover weekly.|Vacuum the base and air it out in the sun now and then.",
    ),
    Category(
        "Cordless Drills",
        "Cordless Drill|Drill Driver|Compact Drill",
        "a brushless motor=runs cooler and lasts longer|an all-metal gearbox=stands up to heavy use|a rubber overmold=gives a secure grip|a lithium-ion battery=holds its charge in storage",
        "a two-speed gearbox|an LED work light|a keyless chuck|a belt clip|a battery fuel gauge|a clutch with many torque settings|a compact head for tight spaces|a hard case with room for bits|a quick charger",
        "hanging shelves|assembling furniture|drilling into masonry|deck building|weekend DIY projects|installing cabinets",
        "homeowners|DIY beginners|contractors|renters|woodworkers",
        (
            ("voltage_v", "a {n}-volt battery", (12, 18, 20)),
            ("torque_nm", "{n} newton meters of torque", range(40, 91, 5)),
            ("weight_g", "a weight of {n} grams", range(900, 1801, 50)),
        ),
        "yellow and black|blue|red|green|a kit with two batteries",
        "Keep the vents free of dust.|Store the batteries indoors at room temperature.",
    ),
    Category(
        "Loose Leaf Tea",
        "Tea|Loose Leaf Tea|Tea Blend",
        "whole-leaf Assam=brews a malty, bold cup|hand-rolled green tea=tastes sweet and grassy|organic rooibos=is naturally caffeine-free|first-flush Darjeeling=has a bright, floral finish",
        "notes of citrus and honey|real pieces of dried fruit|a resealable tin that keeps the leaves fresh|a touch of chamomile and lemongrass|hand-blended small batches|a smooth finish without bitterness|recyclable packaging|leaves that can be steeped several times|a hint of vanilla",
        "quiet mornings|afternoon tea|cozy evenings|iced tea in summer|sharing with friends|winding down before bed",
        "tea lovers|people cutting back on coffee|gift shoppers|anyone who enjoys a calm ritual|new tea drinkers",
        (
            ("weight_g", "{n} grams of loose tea", range(50, 251, 25)),
            ("cups", "about {n} cups per tin", range(25, 121, 5)),
            ("steep_min", "a steeping time of {n} minutes", range(2, 6)),
            ("water_c", "water at {n} degrees Celsius", range(70, 101, 5)),
        ),
        "a 100-gram tin|a gift box|a refill bag|a decaf version|a sampler pack",
        "Keep it in a cool, dark place away from strong smells.|Use fresh, filtered water for the best flavor.",
        consumable=True,
    ),
    Category(
        "Carry-On Luggage",
        "Carry-On|Suitcase|Spinner Suitcase",
        "polycarbonate=flexes under impact instead of cracking|ballistic nylon=resists scuffs and tears|aluminum=protects your belongings|recycled plastic=keeps weight down",
        "four spinner wheels that glide through airports|a TSA-approved combination lock|a compression system that fits more|an expandable zipper|a telescoping handle|a front laptop pocket|a water-resistant shell|a built-in USB port for charging|interior mesh dividers",
        "weekend getaways|business trips|long-haul flights|train travel|conference trips|visiting family",
        "frequent flyers|business travelers|backpackers who prefer wheels|families|students studying abroad",
        (
            ("volume_l", "a {n}-liter capacity", range(35, 46)),
            ("weight_g", "a weight of {n} grams", range(2000, 3801, 100)),
            ("height_cm", "a height of {n} centimeters to fit most overhead bins", range(53, 57)),
        ),
        "black|silver|navy|sage|terracotta",
        "Wipe the shell with a damp cloth after each trip.|Empty it completely and let it air out before storing it.",
    ),
    Category(
        "Wristwatches",
        "Watch|Field Watch|Dive Watch",
        "316L stainless steel=resists corrosion|sapphire crystal=resists scratches|titanium=feels remarkably light|full-grain leather=develops character over time",
        "an automatic movement|a screw-down crown|luminous hands|a date window|a quick-release strap|a rotating bezel|a display caseback|a 42-hour power reserve|a domed crystal",
        "everyday wear|weekend hikes|business meetings|diving holidays|formal events|travel across time zones",
        "first-time watch buyers|collectors|divers|travelers|graduates",
        (
            ("case_mm", "a {n}-millimeter case", range(36, 45)),
            ("water_m", "water resistance to {n} meters", (50, 100, 200, 300)),
            ("lug_mm", "a {n}-millimeter lug width", range(18, 23, 2)),
        ),
        "a black dial|a blue dial|a green dial|a cream dial|a steel bracelet",
        "Have it serviced every five years.|Rinse it with fresh water after swimming in the sea.",
    ),
)

# Brand -> voice. The voice sets adjectives, warranty and the closing line, so a model can learn
# something about a description from the product name alone (the brand is its first word).
BRANDS: tuple[tuple[str, str], ...] = tuple(
    (name, voice)
    for voice, names in {
        "premium": "Alder & Finch|Marlowe|Halcyon|Sterling Row|Aurelian|Belmont|Calloway|Ashcombe|Verity",
        "budget": "Brightwell|Everyday Co|Thriftline|Handy Home|Basics Lab|Goodbuy|Simplio|Tandem|Kipling Goods",
        "eco": "Fernhill|Greenleaf|Pebble & Pine|Tidewater|Mossway|Kindred Earth|Wildroot|Saltmarsh|Bramble",
        "technical": "Kestrel|Vantor|Axion|Northpeak|Ironclad|Corelab|Quantix|Stratus|Meridian Works",
    }.items()
    for name in names.split("|")
)
MODELS = (
    "Ridge|Summit|Atlas|Nova|Echo|Terra|Vista|Arc|Pulse|Orbit|Drift|Haven|Scout|Harbor|Ember|Aspen|Cirrus|"
    "Delta|Fjord|Glacier|Juniper|Kite|Lumen|Nimbus|Onyx|Pioneer|Quill|Sierra|Tundra|Vireo|Willow|Zephyr|"
    "Cobalt|Falcon|Granite|Horizon|Ion|Jasper|Lark|Mesa"
).split("|")
SUFFIXES = (
    "",
    "",
    "",
    " 2",
    " 3",
    " 40",
    " Pro",
    " Lite",
    " Plus",
    " Max",
    " SE",
    " X",
    " Mini",
    " Air",
    " II",
)

ADJECTIVES = {
    "premium": ("premium", "refined", "beautifully finished", "elegant", "luxurious"),
    "budget": ("affordable", "practical", "no-fuss", "dependable", "great-value"),
    "eco": ("eco-conscious", "sustainably made", "low-impact", "responsibly sourced", "planet-friendly"),
    "technical": (
        "precision-engineered",
        "high-performance",
        "carefully engineered",
        "technical",
        "rigorously tested",
    ),
}
WARRANTY_YEARS = {"premium": (5, 10), "budget": (1, 2), "eco": (3, 5), "technical": (2, 3, 5)}
CLOSINGS = {
    "premium": (
        "It is a refined choice that should serve you for years.",
        "It is the kind of {noun} you buy once and keep.",
        "Every detail has been considered, and it shows.",
    ),
    "budget": (
        "It delivers dependable everyday performance at a friendly price.",
        "It proves that a good {noun} does not have to be expensive.",
        "It covers the essentials well and leaves money in your pocket.",
    ),
    "eco": (
        "It ships in plastic-free packaging made from recycled cardboard.",
        "It is a responsible choice that does not compromise on performance.",
        "{brand} offsets the carbon from every delivery.",
    ),
    "technical": (
        "Every unit is tested against strict tolerances before it ships.",
        "It is engineered to perform on day five hundred just as it did on day one.",
        "{brand} publishes full test data for anyone who wants the details.",
    ),
}

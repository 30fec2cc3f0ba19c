"""Word lists and sentence templates for the demo corpus (pure data, no logic).

Template mini-language (rendered by ``corpus.py``):

* ``{slot}``          a word drawn from a topic list (place, thing, things, person, adj, act) or a word class
                      (colour, number, animal, animals, food, foods, emotion, weather, body, family, time, name,
                      friend); a trailing digit (``{thing2}``) asks for a second, different draw of the same slot.
                      ``{pro}``/``{pos}``/``{obj}`` are the main character's pronouns; a capitalised slot name
                      capitalises the word.
* ``[present|past]``  the story's narrative tense picks one side.
* ``<neg>...</neg>``  marks a negated sentence or clause; ``<ask>...</ask>`` marks a question.
* Quotation spans are found from the ``"`` marks; topic, tense and word-class spans are derived by the renderer.

Topic word lists must avoid word-class words (a class word must always be labelled) and words of the generic
templates; ``corpus.py`` derives each topic's lexicon as its words that occur nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicData:
    name: str
    description: str
    places: tuple[str, ...]  # fit "to/near/at the {place}"
    things: tuple[tuple[str, str], ...]  # (singular, plural)
    people: tuple[str, ...]
    adjectives: tuple[str, ...]
    actions: tuple[str, ...]  # singular-subject verb phrases with a [present|past] alternation
    openings: tuple[str, ...]  # first sentences; openings[0] rendered with fixed choices is the topic prompt
    templates: tuple[str, ...]  # topic-specific body sentences


def _pl(*words: str) -> tuple[tuple[str, str], ...]:
    """Regular English plurals, so the lists stay short."""
    out = []
    for w in words:
        if w.endswith(("s", "sh", "ch", "x")):
            out.append((w, w + "es"))
        elif w.endswith("y") and w[-2] not in "aeiou":
            out.append((w, w[:-1] + "ies"))
        else:
            out.append((w, w + "s"))
    return tuple(out)


TOPIC_DATA: tuple[TopicData, ...] = (
    TopicData(
        "ocean", "stories at the seaside: beach, waves, boats and sea creatures",
        ("beach", "harbour", "shore", "pier", "lighthouse", "cove"),
        _pl("shell", "wave", "boat", "sail", "anchor", "seaweed", "pebble", "bucket", "spade", "surfboard",
            "fishing rod", "rockpool", "crab", "seagull", "dolphin", "whale", "oar", "sandcastle", "buoy", "canoe"),
        ("sailor", "fisherman", "lifeguard", "captain"),
        ("salty", "sandy", "foamy", "briny", "wet", "sparkling"),
        ("[swims|swam] in the sea", "[builds|built] a sandcastle", "[paddles|paddled] in the shallow tide",
         "[dives|dived] under a wave", "[collects|collected] shells by the sea", "[rows|rowed] the little canoe"),
        ("One {time} {name} [walks|walked] down to the {place}.",
         "{name} and {friend} [run|ran] across the sand to the {place}."),
        ("The waves [crash|crashed] against the {place} and the seagulls [cry|cried].",
         "{name} [watches|watched] the tide wash over the {things}.",
         "A {adj} breeze [blows|blew] in from the sea."),
    ),
    TopicData(
        "forest", "stories in the woods: trees, paths, mushrooms and woodland life",
        ("forest", "woods", "clearing", "thicket", "glade", "woodland"),
        _pl("tree", "oak", "pine", "branch", "twig", "mushroom", "acorn", "moss", "fern", "log", "stump",
            "pinecone", "trail", "bush", "berry", "root", "woodpecker", "bark", "hollow", "toadstool"),
        ("woodcutter", "ranger", "hermit", "forester"),
        ("leafy", "shady", "mossy", "wild", "tangled", "wooden"),
        ("[climbs|climbed] an old oak", "[follows|followed] the winding trail", "[gathers|gathered] acorns and pinecones",
         "[hides|hid] behind a mossy log", "[picks|picked] wild berries", "[jumps|jumped] over a fallen branch"),
        ("One {time} {name} [walks|walked] into the {place}.",
         "{name} and {friend} [follow|followed] a narrow trail into the {place}."),
        ("Tall pines [sway|swayed] above the {place}.",
         "Sunlight [peeks|peeked] through the leafy branches of the {things}.",
         "A woodpecker [knocks|knocked] on the bark of an oak."),
    ),
    TopicData(
        "space", "stories in outer space: rockets, planets, stars and astronauts",
        ("spaceship", "starbase", "launchpad", "observatory", "lunar base", "crater"),
        _pl("rocket", "planet", "star", "comet", "asteroid", "galaxy", "satellite", "telescope", "spacesuit",
            "helmet", "orbit", "meteor", "alien", "capsule", "nebula", "control panel", "engine", "radar", "antenna",
            "robot"),
        ("astronaut", "pilot", "commander", "scientist"),
        ("shiny", "cosmic", "distant", "weightless", "bright", "glowing"),
        ("[floats|floated] past the porthole", "[counts|counted] down to launch", "[flies|flew] around a planet",
         "[points|pointed] the telescope at Mars", "[fixes|fixed] the rocket engine",
         "[zooms|zoomed] through the galaxy"),
        ("One {time} {name} [climbs|climbed] into the {place}.",
         "{name} and {friend} [blast|blasted] off from the {place} into space."),
        ("The {things} [glow|glowed] in the endless sky of outer space.",
         "Far below, the Earth [looks|looked] like a {adj} marble.",
         "The rocket [rumbles|rumbled] as it [leaves|left] the launchpad."),
    ),
    TopicData(
        "kitchen", "stories about cooking and baking in a kitchen",
        ("kitchen", "pantry", "bakery", "cookery class", "scullery", "larder"),
        _pl("oven", "stove", "pan", "pot", "kettle", "spoon", "ladle", "whisk", "bowl", "apron", "cupboard",
            "recipe", "fridge", "counter", "saucepan", "rolling pin", "tray", "jug", "teapot", "chopping board"),
        ("chef", "baker", "cook", "kitchen helper"),
        ("steaming", "crispy", "tasty", "buttery", "sticky", "delicious"),
        ("[stirs|stirred] the sauce slowly", "[bakes|baked] a batch of buns", "[mixes|mixed] the flour and sugar",
         "[chops|chopped] the vegetables", "[washes|washed] the dishes", "[tastes|tasted] the sauce"),
        ("One {time} {name} [walks|walked] into the {place} to cook.",
         "{name} and {friend} [put|put] on their aprons in the {place}."),
        ("The oven [is|was] ready and the kitchen [smells|smelled] of baking.",
         "{name} [measures|measured] flour into a big mixing bowl.",
         "The kettle [boils|boiled] on the stove."),
    ),
    TopicData(
        "farm", "stories on a farm: barns, tractors, fields and harvests",
        ("farm", "barn", "farmyard", "meadow", "paddock", "orchard"),
        _pl("tractor", "haystack", "fence", "gate", "plough", "silo", "pitchfork", "trough", "wheelbarrow",
            "scarecrow", "bale", "stable", "saddle", "harvest", "crop", "furrow", "pen", "coop", "sack",
            "milk churn"),
        ("farmer", "farmhand", "shepherd", "milkmaid"),
        ("muddy", "dusty", "rusty", "busy", "grassy", "bumpy"),
        ("[drives|drove] the old tractor", "[feeds|fed] the hungry livestock", "[fills|filled] the milk pails at dawn",
         "[carries|carried] a bale of hay", "[mends|mended] the broken fence", "[opens|opened] the hen coop"),
        ("One {time} {name} [walks|walked] across the {place}.",
         "{name} and {friend} [help|helped] the farmer on the {place}."),
        ("The tractor [rumbles|rumbled] along the muddy furrows.",
         "The scarecrow [stands|stood] alone in the middle of the crops.",
         "Hay [is|was] piled high in the barn."),
    ),
    TopicData(
        "school", "stories at school: classrooms, teachers, lessons and homework",
        ("school", "classroom", "playground", "library", "assembly hall", "gymnasium"),
        _pl("desk", "pencil", "notebook", "lesson", "homework", "blackboard", "chalk", "textbook", "ruler",
            "eraser", "backpack", "spelling test", "worksheet", "globe", "timetable", "crayon", "lunchbox",
            "exercise book", "sum", "project"),
        ("teacher", "headteacher", "classmate", "librarian"),
        ("clever", "quiet", "neat", "tricky", "difficult", "important"),
        ("[writes|wrote] in a notebook", "[answers|answered] a question in class", "[solves|solved] a tricky sum",
         "[reads|read] a chapter aloud", "[finishes|finished] the homework", "[sharpens|sharpened] a pencil"),
        ("One {time} {name} [walks|walked] into the {place} for lessons.",
         "{name} and {friend} [sit|sat] together in the {place}."),
        ("The teacher [writes|wrote] a sum on the blackboard.",
         "The school bell [rings|rang] and the pupils [hurry|hurried] to class.",
         "Everyone in the classroom [opens|opened] their textbooks."),
    ),
    TopicData(
        "music", "stories about music: instruments, songs, bands and concerts",
        ("concert hall", "music room", "stage", "bandstand", "studio", "opera house"),
        _pl("piano", "guitar", "violin", "drum", "trumpet", "flute", "song", "melody", "tune", "note", "rhythm",
            "choir", "band", "concert", "microphone", "harp", "cello", "tambourine", "chord", "lullaby"),
        ("musician", "conductor", "singer", "drummer"),
        ("loud", "soft", "musical", "catchy", "joyful", "tuneful"),
        ("[plays|played] the piano", "[sings|sang] a merry song", "[strums|strummed] the guitar",
         "[beats|beat] the drum in rhythm", "[practises|practised] the violin", "[hums|hummed] a soft melody"),
        ("One {time} {name} [walks|walked] into the {place} to play music.",
         "{name} and {friend} [tune|tuned] their instruments in the {place}."),
        ("The band [plays|played] a catchy tune and everyone [claps|clapped].",
         "The conductor [raises|raised] a baton at the orchestra.",
         "Music [fills|filled] the {place}."),
    ),
    TopicData(
        "sport", "stories about sport: football, races, teams and matches",
        ("stadium", "football pitch", "sports field", "racetrack", "tennis court", "swimming pool"),
        _pl("ball", "goal", "team", "match", "race", "trophy", "medal", "whistle", "kick", "net", "racket",
            "score", "jersey", "sneaker", "stopwatch", "hurdle", "relay", "tournament", "penalty", "champion"),
        ("coach", "referee", "goalkeeper", "player"),
        ("fast", "sporty", "winning", "speedy", "athletic", "fit"),
        ("[kicks|kicked] the ball into the goal", "[runs|ran] the race", "[scores|scored] a goal",
         "[passes|passed] the ball to a teammate", "[jogs|jogged] with the team", "[wins|won] a medal"),
        ("One {time} {name} [walks|walked] into the {place} for the match.",
         "{name} and {friend} [stretch|stretched] at the {place} before the race."),
        ("The referee [blows|blew] the whistle and the match [begins|began].",
         "The crowd in the stadium [cheers|cheered] for the team.",
         "{name} [sprints|sprinted] down the racetrack."),
    ),
    TopicData(
        "winter", "stories in winter: snow, ice, sledges and snowmen",
        ("ice rink", "frozen pond", "ski slope", "sledging hill", "mountain hut", "igloo"),
        _pl("snowman", "snowflake", "sledge", "scarf", "mitten", "icicle", "snowball", "glove", "ski", "skate",
            "boot", "blanket", "fireplace", "snowdrift", "earmuff", "woolly hat", "chimney", "frost", "cocoa mug",
            "toboggan"),
        ("skier", "skater", "ski instructor", "mountain guide"),
        ("frozen", "icy", "chilly", "woolly", "slippery", "frosty"),
        ("[builds|built] a big snowman", "[throws|threw] a snowball", "[skates|skated] on the ice",
         "[slides|slid] down the hill on a sledge", "[catches|caught] snowflakes", "[bundles|bundled] up in a woolly scarf"),
        ("One {time} {name} [walks|walked] out to the {place} in the snow.",
         "{name} and {friend} [pull|pulled] their sledges up the {place}."),
        ("Snow [covers|covered] everything and icicles [hang|hung] from the roof.",
         "{name} [puts|put] on mittens and a woolly scarf.",
         "The frozen pond [glitters|glittered] with frost."),
    ),
    TopicData(
        "storm", "stories about storms: thunder, lightning, gales and floods",
        ("storm shelter", "cellar", "attic", "porch", "hilltop", "valley"),
        _pl("thunder", "lightning", "gale", "thundercloud", "raindrop", "puddle", "flood", "umbrella", "raincoat",
            "torrent", "hailstone", "tornado", "hurricane", "shutter", "drainpipe", "flash", "thunderclap", "downpour",
            "lantern", "sandbag"),
        ("storm chaser", "weather reporter", "rescuer", "firefighter"),
        ("howling", "roaring", "soaked", "dark", "furious", "thundering"),
        ("[hides|hid] from the thunder", "[closes|closed] the shutters", "[watches|watched] the lightning flash",
         "[splashes|splashed] through the puddles", "[holds|held] the umbrella tight", "[counts|counted] after each flash"),
        ("One {time} {name} [hears|heard] thunder rumble over the {place}.",
         "{name} and {friend} [run|ran] to the {place} as the storm [begins|began]."),
        ("Lightning [flashes|flashed] and thunder [rumbles|rumbled] across the sky.",
         "The howling gale [rattles|rattled] the shutters and drainpipes.",
         "Rain [pours|poured] down in a heavy downpour."),
    ),
    TopicData(
        "castle", "stories in a castle: kings, queens, knights and dragons",
        ("castle", "throne room", "tower", "courtyard", "drawbridge", "dungeon"),
        _pl("crown", "sword", "shield", "throne", "banner", "moat", "armour", "dragon", "knight", "princess",
            "prince", "jewel", "treasure", "goblet", "torch", "battlement", "horseback rider", "wizard", "spell",
            "scroll"),
        ("king", "queen", "knight", "guard"),
        ("royal", "ancient", "mighty", "noble", "grand", "magical"),
        ("[polishes|polished] a royal sword", "[guards|guarded] the drawbridge", "[bows|bowed] before the king",
         "[climbs|climbed] the castle tower", "[rides|rode] into battle", "[searches|searched] for hidden treasure"),
        ("One {time} {name} [walks|walked] across the drawbridge into the {place}.",
         "{name} and {friend} [explore|explored] the halls of the {place}."),
        ("The king [sits|sat] on a grand throne in the {place}.",
         "A dragon [circles|circled] above the castle towers.",
         "Knights in armour [guard|guarded] the gatehouse."),
    ),
    TopicData(
        "hospital", "stories in a hospital: doctors, nurses and getting well",
        ("hospital", "ward", "clinic", "waiting room", "surgery", "pharmacy"),
        _pl("bandage", "plaster", "medicine", "stethoscope", "thermometer", "wheelchair", "stretcher", "injection",
            "pill", "bed", "ambulance", "crutch", "sling", "check-up", "prescription", "x-ray", "patient", "vitamin",
            "temperature", "cough"),
        ("doctor", "nurse", "surgeon", "paramedic"),
        ("sick", "poorly", "healthy", "sore", "gentle", "careful"),
        ("[takes|took] the medicine", "[rests|rested] in a hospital bed", "[waits|waited] for the doctor",
         "[gets|got] a bandage", "[listens|listened] through the stethoscope", "[visits|visited] a patient"),
        ("One {time} {name} [walks|walked] into the {place} to see the doctor.",
         "{name} and {friend} [wait|waited] in the {place} for the nurse."),
        ("The doctor [listens|listened] to the patient with a stethoscope.",
         "A nurse [brings|brought] medicine and a glass of juice.",
         "An ambulance [arrives|arrived] at the hospital with its siren on."),
    ),
    TopicData(
        "garden", "stories in a garden: flowers, seeds, watering and growing plants",
        ("garden", "greenhouse", "vegetable patch", "flowerbed", "allotment", "potting shed"),
        _pl("flower", "rose", "tulip", "daisy", "sunflower", "seed", "watering can", "trowel", "hose", "weed",
            "petal", "stem", "soil", "lawn", "hedge", "compost", "shovel", "sprout", "bulb", "flowerpot"),
        ("gardener", "neighbour", "florist", "landscaper"),
        ("blooming", "fragrant", "sprouting", "lush", "colourful", "growing"),
        ("[plants|planted] some seeds", "[waters|watered] the roses", "[digs|dug] in the soil",
         "[pulls|pulled] up the weeds", "[picks|picked] a bunch of daisies", "[mows|mowed] the lawn"),
        ("One {time} {name} [walks|walked] out into the {place} to plant seeds.",
         "{name} and {friend} [dig|dug] a flowerbed in the {place}."),
        ("The sunflowers [grow|grew] taller than the hedge.",
         "Bees [buzz|buzzed] around the fragrant roses.",
         "{name} [fills|filled] the watering can from the hose."),
    ),
    TopicData(
        "train_journey", "stories about a train journey: stations, tickets, carriages and railways",
        ("station", "platform", "carriage", "railway", "ticket office", "dining car"),
        _pl("train", "ticket", "suitcase", "seat", "track", "tunnel", "train driver", "locomotive", "departure board",
            "luggage", "compartment", "signal", "bridge", "railway map", "steam", "signal box", "passenger",
            "rail", "sleeper", "sleeping berth"),
        ("stationmaster", "porter", "ticket inspector", "train driver"),
        ("long", "rattling", "speeding", "crowded", "smoky", "chugging"),
        ("[boards|boarded] the train", "[shows|showed] the ticket to the inspector",
         "[peers|peered] out of the carriage", "[sits|sat] in a sleeping berth", "[lifts|lifted] a heavy suitcase",
         "[watches|watched] the fields rush past"),
        ("One {time} {name} [waits|waited] at the {place} for the train.",
         "{name} and {friend} [climb|climbed] aboard the train at the {place}."),
        ("The train [chugs|chugged] out of the station and [rattles|rattled] along the tracks.",
         "The ticket inspector [punches|punched] a hole in each ticket.",
         "The locomotive [toots|tooted] as it [enters|entered] the tunnel."),
    ),
    TopicData(
        "birthday", "stories about birthday parties: presents, balloons, candles and guests",
        ("party", "party room", "living room", "bowling alley", "marquee", "funfair"),
        _pl("balloon", "present", "candle", "invitation", "ribbon", "streamer", "card", "gift", "party hat",
            "wrapping paper", "guest", "game", "wish", "surprise", "party bag", "confetti", "rosette", "cupcake",
            "bunting", "goody bag"),
        ("party guest", "magician", "clown", "entertainer"),
        ("festive", "wrapped", "surprising", "fun", "sparkly", "special"),
        ("[blows|blew] out the candles", "[opens|opened] a present", "[makes|made] a birthday wish",
         "[ties|tied] a ribbon on a gift", "[pops|popped] a balloon", "[gives|gave] out party bags"),
        ("One {time} {name} [wakes|woke] up early for the birthday {place}.",
         "{name} and {friend} [hang|hung] balloons all over the {place}."),
        ("Everyone [cheers|cheered] and [claps|clapped] for the birthday guest.",
         "{name} [unwraps|unwrapped] a present tied with a ribbon.",
         "{number} candles [glow|glowed] on the birthday table."),
    ),
    TopicData(
        "night", "stories at night: moonlight, bedtime, dreams and the dark",
        ("bedroom", "tent", "rooftop", "window", "campsite", "hammock"),
        _pl("moon", "owl", "lamp", "pillow", "dream", "shadow", "candlelight", "nightlight", "firefly", "bedtime story",
            "pyjama", "pillow fort", "torchlight", "midnight feast", "sleepover", "duvet", "teddy", "curtain",
            "moonbeam", "starlight"),
        ("night watchman", "babysitter", "storyteller", "sleepwalker"),
        ("sleepy", "silent", "moonlit", "starry", "drowsy", "peaceful"),
        ("[yawns|yawned] sleepily", "[listens|listened] to the owl hoot", "[switches|switched] on the nightlight",
         "[snuggles|snuggled] under the duvet", "[gazes|gazed] at the moon", "[whispers|whispered] a bedtime story"),
        ("One {time} {name} [looks|looked] out of the {place} at the moon.",
         "{name} and {friend} [stay|stayed] up late in the {place} at night."),
        ("The moon [shines|shone] through the curtains at midnight.",
         "An owl [hoots|hooted] somewhere in the darkness.",
         "{name} [yawns|yawned] and [snuggles|snuggled] into the pillow."),
    ),
)

# ---- word classes: every occurrence in the corpus is labelled ---------------------------------------------------
COLOURS = ("red", "blue", "green", "yellow", "purple", "pink", "orange", "brown", "black", "white", "grey",
           "golden", "silver", "violet", "turquoise", "crimson", "scarlet", "navy")
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "twenty",
           "thirty", "forty", "fifty")
ANIMALS = (("cat", "cats"), ("dog", "dogs"), ("rabbit", "rabbits"), ("horse", "horses"), ("mouse", "mice"),
           ("bird", "birds"), ("fox", "foxes"), ("bear", "bears"), ("duck", "ducks"), ("frog", "frogs"),
           ("goat", "goats"), ("sheep", "sheep"), ("pig", "pigs"), ("cow", "cows"), ("lion", "lions"),
           ("tiger", "tigers"), ("elephant", "elephants"), ("monkey", "monkeys"), ("zebra", "zebras"),
           ("giraffe", "giraffes"), ("deer", "deer"), ("wolf", "wolves"), ("squirrel", "squirrels"),
           ("hedgehog", "hedgehogs"), ("turtle", "turtles"), ("puppy", "puppies"), ("kitten", "kittens"),
           ("hamster", "hamsters"), ("parrot", "parrots"), ("donkey", "donkeys"), ("badger", "badgers"),
           ("beetle", "beetles"), ("butterfly", "butterflies"), ("snail", "snails"), ("goose", "geese"),
           ("penguin", "penguins"), ("chicken", "chickens"), ("lamb", "lambs"))
FOODS = (("apple", "apples"), ("banana", "bananas"), ("carrot", "carrots"), ("potato", "potatoes"),
         ("tomato", "tomatoes"), ("pear", "pears"), ("cherry", "cherries"), ("grape", "grapes"),
         ("lemon", "lemons"), ("plum", "plums"), ("peach", "peaches"), ("biscuit", "biscuits"),
         ("muffin", "muffins"), ("pancake", "pancakes"), ("sandwich", "sandwiches"), ("cookie", "cookies"),
         ("pie", "pies"), ("strawberry", "strawberries"), ("egg", "eggs"), ("pizza", "pizzas"),
         ("cheese", None), ("bread", None), ("soup", None), ("honey", None), ("jam", None), ("rice", None),
         ("porridge", None), ("cake", None), ("pasta", None), ("toast", None), ("yoghurt", None), ("melon", "melons"))
EMOTIONS = ("happy", "sad", "excited", "scared", "proud", "angry", "calm", "nervous", "surprised", "curious",
            "tired", "lonely", "brave", "cheerful", "grumpy", "worried", "glad", "shy", "jealous", "thankful")
WEATHER = ("sunny", "rainy", "cloudy", "windy", "foggy", "misty", "stormy", "snowy", "warm", "hot", "breezy",
           "drizzly", "cold", "freezing")
BODY_PARTS = ("hand", "hands", "foot", "feet", "nose", "ear", "ears", "eye", "eyes", "knee", "knees", "elbow",
              "finger", "fingers", "toe", "toes", "head", "arm", "arms", "leg", "legs", "shoulder", "tummy", "chin",
              "cheek", "hair", "mouth", "thumb")
FAMILY = ("mother", "father", "grandmother", "grandfather", "brother", "sister", "aunt", "uncle", "cousin",
          "mum", "dad", "grandma", "grandpa")
TIMES = ("morning", "afternoon", "evening", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
         "Sunday")
# (name, subject, possessive, object); the first name and first time build the topic prompts.
NAMES = tuple((n, "she", "her", "her") for n in (
    "Mia", "Lily", "Emma", "Zoe", "Anna", "Ruby", "Ella", "Grace", "Chloe", "Sophie", "Amy", "Lucy", "Hannah",
    "Rosa", "Nina", "Ivy", "Maya", "Clara", "Alice", "Poppy")) + tuple((n, "he", "his", "him") for n in (
    "Tom", "Ben", "Sam", "Leo", "Max", "Jack", "Oscar", "Noah", "Finn", "Liam", "Hugo", "Theo", "Oliver", "Leon",
    "Felix", "Arlo", "Ravi", "Omar", "Jamal", "Kai"))

# ---- generic templates: each has at least one topic slot so every sentence carries its topic ----------------------
GENERIC_OPENINGS = (
    "One {time} {name} [goes|went] to the {place} with {friend}.",
    "{name} [lives|lived] near a {adj} {place} with {pos} {family}.",
    "On a {weather} {time}, {name} and {pos} {family} [visit|visited] the {place}.",
    "{name} [loves|loved] the {place} more than anywhere else.",
    "It [is|was] a {weather} {time} when {name} [arrives|arrived] at the {place}.",
)
GENERIC_BODY = (
    # narration
    "{name} [sees|saw] a {colour} {thing} near the {place}.",
    "{Pro} [counts|counted] {number} {things} at the {place}.",
    "{friend} [points|pointed] at the {thing} and [laughs|laughed].",
    "{name} [feels|felt] {emotion} when {pro} [sees|saw] the {things}.",
    "There [are|were] {number} {things} beside the {person}.",
    "The {person} [gives|gave] {name} a {colour} {thing}.",
    "{name} [holds|held] the {thing} in {pos} {body}.",
    "The {thing} [is|was] {adj} and {colour}.",
    "{name} {act}.",
    "{friend} {act}.",
    "{name} {act} with {pos} {family}.",
    "The {person} [says|said] that the {thing} [is|was] very {adj}.",
    "{Pro} [finds|found] a {thing} as big as a {animal}.",
    "A {colour} {animal} [sits|sat] next to the {thing}.",
    "{name} [shares|shared] some {food} with the {person}.",
    "After lunch, {name} [eats|ate] {food} near the {place}.",
    "The weather [is|was] {weather}, so {name} [stays|stayed] close to the {place}.",
    "It [is|was] a {weather} day at the {place}.",
    "{name} [rubs|rubbed] {pos} {body} and [looks|looked] at the {thing}.",
    "{Pos} {family} [calls|called] out from the {place}.",
    "{name} [draws|drew] a picture of {number} {things}.",
    "{friend} [brings|brought] {number} {foods} to the {place}.",
    "{name} [puts|put] the {thing} next to the {thing2}.",
    "Slowly, {name} {act}.",
    "{Pro} [wants|wanted] to show the {thing} to {pos} {family}.",
    "{number} {colour} {things} [lie|lay] near the {place}.",
    "{name} [gives|gave] {number} {foods} to the {animal} at the {place}.",
    "{name} [feels|felt] {emotion} and a little {emotion2} at the {place}.",
    "{name} [counts|counted] the {things} and [gets|got] {number}.",
    "The {person} [is|was] {emotion} because the {thing} [is|was] {adj}.",
    "A {animal} [runs|ran] past the {place} with a {food} in its jaws.",
    "The {person} [helps|helped] {name} carry the {thing}.",
    "{friend} [taps|tapped] {name} on the {body} and [points|pointed] at the {place}.",
    "Together they [find|found] {number} {adj} {things}.",
    # negation
    "<neg>{name} [does not|did not] see any {things} at the {place}.</neg>",
    "<neg>There [is|was] no {thing} near the {place}.</neg>",
    "<neg>{friend} [never finds|never found] the {colour} {thing}.</neg>",
    "{name} [looks|looked] for the {thing}, but <neg>{pro} [cannot|could not] find it</neg>.",
    "<neg>Nobody [knows|knew] where the {thing} [is|was].</neg>",
    "<neg>The {person} [is not|was not] {emotion} about the {things}.</neg>",
    "{name} [likes|liked] the {thing}, but <neg>{pro} [does not|did not] like the {thing2}</neg>.",
    # dialogue
    "\"Look at the {adj} {thing}!\" [says|said] {friend}.",
    "\"<ask>Where is the {thing}?</ask>\" [asks|asked] {name}.",
    "\"<ask>Can we go to the {place}?</ask>\" {name} [asks|asked] {pos} {family}.",
    "\"I can see {number} {things}!\" [shouts|shouted] {friend}.",
    "\"<ask>How many {things} are there?</ask>\" [asks|asked] the {person}.",
    "\"<neg>I do not want to leave the {place}</neg>,\" [says|said] {name}.",
    "\"My {body} hurts,\" [says|said] {name} to the {person}.",
    "\"This {thing} is {colour},\" [says|said] {friend} with a smile.",
    "\"I feel so {emotion} today,\" {name} [tells|told] the {person}.",
    "\"<ask>Do you like the {thing}?</ask>\" [asks|asked] {friend}.",
    "\"<ask>Is the {person} {emotion}?</ask>\" {name} [whispers|whispered].",
    "\"<neg>There are no {things} here</neg>,\" [says|said] the {person}.",
    "\"We need {number} more {things},\" [says|said] the {person}.",
    "\"Let us go to the {place},\" [says|said] {name}.",
    "\"<ask>Why is the {thing} so {adj}?</ask>\" [asks|asked] {friend}.",
    "\"<neg>I have never seen a {adj} {thing} before</neg>,\" [says|said] {name}.",
    # narrated questions
    "<ask>Would {name} ever find the {colour} {thing}?</ask>",
    "<ask>What [is|was] inside the {adj} {thing}?</ask>",
)
GENERIC_ENDINGS = (
    "At the end of the day, {name} [feels|felt] {emotion} about the {place}.",
    "Later, {name} [thinks|thought] of the {adj} {things}.",
    "{name} [goes|went] home with {pos} {family}, still thinking about the {thing}.",
    "It [is|was] the best day ever at the {place}.",
    "{name} [smiles|smiled] and [says|said] goodbye to the {person}.",
    "\"<ask>Can we come back to the {place} tomorrow?</ask>\" [asks|asked] {name}.",
)
# topic mixing: the first sentence of a switch is rendered with the second topic, the return with the first
SWITCH_TO = (
    "Later, {name} and {friend} [go|went] to the {place}.",
    "After a while, {name} [visits|visited] the {place}.",
)
SWITCH_BACK = (
    "Then {name} [goes|went] back to the {place}.",
    "Soon {name} [returns|returned] to the {place}.",
)
NEUTRAL_PROMPTS = (
    "One day Tom",
    "Once upon a time, there was a girl called Mia.",
    "Ben had a friend called Lily.",
    "It was a lovely day for Sam.",
    "Anna looked around and",
    "Max said hello to his friend.",
)

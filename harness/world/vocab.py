"""The world's words: real English, grouped by the role they play in prompts, responses and the gold reward.

Kept as plain lists so a reader can see exactly what the tokenizer knows. Order matters: it fixes token ids.
"""

DOMAINS = ("roleplay", "chitchat", "subjective_qa", "objective_qa", "text_creation")

# A prompt names its task with one of these words only some of the time (``marker_rate``); otherwise it opens
# with the neutral word "prompt". Real prompts rarely announce their category: that is what a router is for.
DOMAIN_MARKERS = {
    "roleplay": "pretend",
    "chitchat": "chat",
    "subjective_qa": "opinion",
    "objective_qa": "fact",
    "text_creation": "compose",
}
NEUTRAL_MARKER = "prompt"

# Topic nouns: one pool per domain (a weak domain cue) and a shared pool.
TOPICS = {
    "roleplay": """knight dragon wizard castle pirate queen sword ship captain tavern forest witch
        throne quest guard prince village treasure giant crown monster""".split(),
    "chitchat": """weekend coffee weather movie friend dinner pizza music holiday game party phone
        lunch beach morning family breakfast puppy garden sunday""".split(),
    "subjective_qa": """art beauty freedom success happiness taste fashion career design style poetry
        culture ethics politics tradition luxury talent wisdom comfort value""".split(),
    "objective_qa": """planet atom river mountain metal ocean element island desert volcano mineral
        continent glacier crystal reactor molecule canyon comet satellite tower""".split(),
    "text_creation": """story poem letter essay song speech novel chapter verse script diary ballad
        fable legend sonnet memoir slogan lyric tale anthem""".split(),
}
SHARED_TOPICS = """city water light night winter summer road bird tree horse book school door window
    market bridge train cloud stone fire""".split()

# Filler: the glue of every response; uniform draws, so a language model cannot predict them.
FILLER = """the a an and or but so then also very really just about with from into over under after
    before while because this that these those it they we you he she is are was were be been have has
    had do does did can could will would should may might must not only even still more most less some
    any each every many much such other another first last next good new old great small big long
    little own same right high low early late young important public sure clear whole free full special
    easy hard best better real true open strong simple quick bright calm deep warm soft""".split()

# Tone words: warmth and enthusiasm. Rewarded in some domains, penalised in others (multi-task conflict).
TONE = """wonderful lovely amazing delightful fantastic brilliant charming awesome cheerful gorgeous
    marvelous joyful splendid superb fabulous glorious magical sweet exciting thrilling""".split()

# Hedges: nuance in an opinion, evasion in a factual answer.
HEDGES = "maybe perhaps possibly arguably likely probably somewhat apparently seemingly roughly".split()

COLOURS = "red blue green yellow purple orange black white silver golden brown pink".split()

# Entities of the world's knowledge base (each has one true colour); used by objective QA.
ENTITIES = """amber basalt cobalt dunmore elmwood fenwick garnet halden ironwood jasper kestrel larkspur
    marlow norwood oakhurst pinecrest quarry redwood sable thornbury umber valewood westbrook yarrow
    zephyr ashford birchwood coldwater driftwood eastmere foxglove greystone hollowell ivory juniper
    kingsley lindenwood moorfield nettle""".split()

# Words used to build prompts and to give answers; fixed phrasing keeps the language easy to learn.
PROMPT_WORDS = "tell me about please what colour is of the".split()
ANSWER_WORDS = "answer is".split()
PUNCTUATION = [":", "?", ".", "=>"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def all_words() -> list[str]:
    """Every word the world can produce, deduplicated, in a fixed order (token ids follow it)."""
    words = list(SPECIAL_TOKENS) + PUNCTUATION + [NEUTRAL_MARKER] + list(DOMAIN_MARKERS.values())
    for domain in DOMAINS:
        words += TOPICS[domain]
    words += SHARED_TOPICS + FILLER + TONE + HEDGES + COLOURS + ENTITIES + PROMPT_WORDS + ANSWER_WORDS
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)

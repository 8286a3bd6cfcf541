"""Text for the speech default: the character set transcripts are written in, and the sentences spoken.

Transcripts use SPEECH_CHARACTERS only (lowercase a-z, space and the punctuation ' , . ? !), so a character
tokenizer covers them with 32 symbols. `normalize_text` maps other text into that set where the mapping is
obvious (case, accents, curly quotes, runs of spaces) and refuses the rest by name (digits, symbols, scripts).

Sentences come from a small English grammar written here (word lists below) and, for a share of them, from the
Debian `wamerican` word list (/usr/share/dict/words) read as words a speaker lists ("she wrote the words ...").
Both ship offline; every choice is drawn from the caller's `random.Random`, so a seed fixes the text.
"""
import random
import re
import unicodedata
from pathlib import Path

SPEECH_CHARACTERS = "abcdefghijklmnopqrstuvwxyz ',.?!"
_REPLACEMENTS = {"\u2018": "'", "\u2019": "'", "\u201c": "", "\u201d": "", '"': "", "\u2013": ",", "\u2014": ",",
                 ";": ",", ":": ",", "-": " "}


def normalize_text(text: str) -> str:
    """`text` in SPEECH_CHARACTERS: lowercased, accents stripped, quotes, dashes, colons and semicolons mapped,
    whitespace collapsed, no space before punctuation. Raises ValueError for empty text or characters with no
    mapping, naming them."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    mapped = "".join(_REPLACEMENTS.get(char, char) for char in plain)
    collapsed = re.sub(r" ([,.?!])", r"\1", re.sub(r"\s+", " ", mapped)).strip(" ,")
    unknown = sorted({char for char in collapsed if char not in SPEECH_CHARACTERS})
    if unknown:
        named = ", ".join(f"{char!r} ({unicodedata.name(char, 'U+%04X' % ord(char))})" for char in unknown)
        raise ValueError(f"text {text!r} has characters outside the speech character set "
                         f"{SPEECH_CHARACTERS!r}: {named}")
    if not re.search("[a-z]", collapsed):
        raise ValueError(f"text must hold at least one letter, got {text!r}")
    return collapsed


def read_word_list(path: str | Path, min_letters: int = 3, max_letters: int = 12) -> list[str]:
    """The plain lowercase words of a word list, one per line (proper nouns, possessives and accented words
    are left out), in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word_list {path} does not exist (Debian package wamerican)")
    pattern = re.compile(f"[a-z]{{{min_letters},{max_letters}}}")
    words = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    words = [word for word in words if pattern.fullmatch(word)]
    if not words:
        raise ValueError(f"word_list {path} holds no plain lowercase word of {min_letters}-{max_letters} letters")
    return words


NAMES = ("anna", "peter", "maria", "james", "lucy", "david", "emma", "thomas", "sarah", "oliver", "grace", "henry",
         "alice", "samuel", "nora", "victor", "helen", "martin", "ruth", "frank")
DETERMINERS = ("the", "a", "my", "our", "this", "that", "every", "her", "his", "their")
ADJECTIVES = ("old", "young", "small", "large", "quiet", "noisy", "bright", "dark", "warm", "cold", "heavy", "light",
              "green", "red", "blue", "yellow", "wooden", "broken", "clever", "tired", "happy", "angry", "gentle",
              "strange", "empty", "famous", "hidden", "narrow", "silver", "rusty", "careful", "lonely", "busy",
              "curious", "ancient", "soft", "sharp", "wild", "tiny", "golden")
NOUNS = ("cat", "dog", "teacher", "farmer", "river", "window", "garden", "letter", "kitchen", "bridge", "train",
         "village", "doctor", "child", "horse", "basket", "mountain", "candle", "painter", "sailor", "forest",
         "market", "bottle", "engine", "library", "lamp", "island", "baker", "table", "road", "storm", "coat",
         "clock", "bird", "boat", "apple", "violin", "map", "stone", "ladder", "parcel", "tower", "shadow",
         "neighbour", "mirror", "blanket", "field", "station", "umbrella", "pocket")
PEOPLE = ("teacher", "farmer", "doctor", "child", "painter", "sailor", "baker", "neighbour")  # who can speak
TRANSITIVE_VERBS = (("find", "found"), ("carry", "carried"), ("paint", "painted"), ("open", "opened"),
                    ("follow", "followed"), ("clean", "cleaned"), ("watch", "watched"), ("build", "built"),
                    ("sell", "sold"), ("hide", "hid"), ("push", "pushed"), ("borrow", "borrowed"),
                    ("forget", "forgot"), ("fix", "fixed"), ("leave", "left"), ("bring", "brought"),
                    ("draw", "drew"), ("catch", "caught"), ("lift", "lifted"), ("visit", "visited"))
INTRANSITIVE_VERBS = (("sleep", "slept"), ("wait", "waited"), ("laugh", "laughed"), ("sing", "sang"),
                      ("arrive", "arrived"), ("fall", "fell"), ("run", "ran"), ("listen", "listened"),
                      ("vanish", "vanished"), ("shine", "shone"), ("rest", "rested"), ("shiver", "shivered"))
ADVERBS = ("slowly", "quickly", "quietly", "loudly", "carefully", "again", "today", "suddenly", "happily", "early",
           "late", "twice", "together", "outside")
PREPOSITIONS = ("near", "behind", "under", "beside", "across", "inside", "above", "beyond", "around", "past")
OPENERS = ("yesterday,", "this morning,", "after dinner,", "in the evening,", "last winter,", "at noon,",
           "once again,", "without a word,", "before the rain,", "on sunday,")
CONJUNCTIONS = ("and", "but", "because", "while", "so", "until", "although")
QUESTION_WORDS = ("why", "when", "where", "how")
SPEAKING_VERBS = ("said", "wrote", "read", "whispered", "repeated", "spelled", "shouted")


def _noun_phrase(rng: random.Random, adjectives: int) -> list[str]:
    if adjectives == 0 and rng.random() < 0.25:
        return [rng.choice(NAMES)]
    words = [rng.choice(ADJECTIVES) for _ in range(adjectives)] + [rng.choice(NOUNS)]
    determiner = rng.choice(DETERMINERS)
    if determiner == "a" and words[0][0] in "aeiou":
        determiner = "an"
    return [determiner] + words


def _clause(rng: random.Random) -> list[str]:
    """subject verb [object], 2-7 words."""
    subject = _noun_phrase(rng, adjectives=rng.choice((0, 0, 1)))
    if rng.random() < 0.6:
        return subject + [rng.choice(TRANSITIVE_VERBS)[1]] + _noun_phrase(rng, adjectives=rng.choice((0, 1)))
    return subject + [rng.choice(INTRANSITIVE_VERBS)[1]]


def _question(rng: random.Random) -> list[str]:
    """wh-word did subject verb [object], 4-9 words."""
    words = [rng.choice(QUESTION_WORDS), "did"] + _noun_phrase(rng, adjectives=rng.choice((0, 1)))
    if rng.random() < 0.6:
        return words + [rng.choice(TRANSITIVE_VERBS)[0]] + _noun_phrase(rng, adjectives=rng.choice((0, 1)))
    return words + [rng.choice(INTRANSITIVE_VERBS)[0]]


def _extend(words: list[str], rng: random.Random) -> list[str]:
    """One grammatical addition: an adverb, a place, an opener, or a second clause."""
    choice = rng.random()
    if choice < 0.3:
        return words + [rng.choice(PREPOSITIONS)] + _noun_phrase(rng, adjectives=rng.choice((0, 1)))
    if choice < 0.45:
        return words + [rng.choice(ADVERBS)]
    if choice < 0.6 and not any(word.endswith(",") for word in words):  # one opener at most
        return rng.choice(OPENERS).split() + words
    return words + [rng.choice(CONJUNCTIONS)] + _clause(rng)


def grammar_sentence(rng: random.Random, num_words: int) -> str:
    """A sentence of about `num_words` words from the grammar (grown clause by clause, so it may miss by a few):
    statements, some questions and exclamations."""
    kind = rng.random()
    words = _question(rng) if kind < 0.15 else _clause(rng)
    while len(words) < num_words - 1:
        grown = _extend(words, rng)
        if len(grown) > num_words + 2:
            break
        words = grown
    mark = "?" if kind < 0.15 else "!" if kind < 0.22 else "."
    return " ".join(words) + mark


def word_list_sentence(rng: random.Random, num_words: int, dictionary: list[str]) -> str:
    """'<subject> <spoke> the words w1, w2 and w3.' with as many listed words as make `num_words` (at least two)."""
    speaker = [rng.choice(NAMES)] if rng.random() < 0.5 else ["the", rng.choice(PEOPLE)]
    opening = speaker + [rng.choice(SPEAKING_VERBS), "the", "words"]
    listed = [rng.choice(dictionary) for _ in range(max(2, num_words - len(opening) - 1))]
    return " ".join(opening + [", ".join(listed[:-1]), "and", listed[-1]]) + "."


def draw_sentence(rng: random.Random, min_words: int, max_words: int, dictionary: list[str],
                  word_list_prob: float) -> str:
    """One normalised sentence of min_words to max_words words: a word-list sentence with probability
    `word_list_prob`, else a grammar one. The length aimed at is drawn uniformly first; a sentence that misses
    the range is drawn again."""
    while True:
        num_words = rng.randint(min_words, max_words)
        if dictionary and rng.random() < word_list_prob:
            sentence = word_list_sentence(rng, num_words, dictionary)
        else:
            sentence = grammar_sentence(rng, num_words)
        if min_words <= len(sentence.split()) <= max_words:
            return normalize_text(sentence)

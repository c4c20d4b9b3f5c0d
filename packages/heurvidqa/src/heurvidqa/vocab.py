"""Entity (noun) and action (verb) vocabularies mined from the *training* split (spec §1.2).

No tagger model can be downloaded, so part-of-speech comes from ``lemminflect.getAllLemmas`` (UPOS
keys NOUN / VERB / ADJ) plus a little context [R]:

- a closed-class stopword list (determiners, pronouns, prepositions, conjunctions, wh-words,
  auxiliaries and light verbs: be/have/do/go/get) is dropped first;
- a word that can be both NOUN and VERB is a VERB right after a subject-like word (``that``,
  ``it``, ``who``, ``which``, a pronoun) or ``to``, else a NOUN;
- ``verb_particles``: a verb followed by a particle (left/right/up/down/…) is the phrase
  ``"move left"`` and the bare verb is not counted for that occurrence;
- ``adjective_bigrams``: an ADJ-capable word right before a noun adds the bigram ``"red circle"``
  (the noun is counted too).

𝓔 = the ``entity_vocab_size`` most frequent nouns/bigrams, 𝓐 = the ``action_vocab_size`` most
frequent verbs/phrases, each with frequency ≥ ``min_count``; ties broken alphabetically.
Prompt templates: ALPRO's 12 video templates for entities; action templates take the -ing form
(``lemminflect.getInflection(verb, 'VBG')``) [R].
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from heurvidqa.config import HeuristicConfig

__all__ = [
    "ACTION_TEMPLATES",
    "ENTITY_TEMPLATES",
    "STOPWORDS",
    "action_prompts",
    "entity_prompts",
    "mine_vocabularies",
    "tag_tokens",
]

ENTITY_TEMPLATES = (
    "A footage of a {}.", "A footage of the {}.", "A footage of one {}.", "A video of a {}.",
    "A video of the {}.", "A video of one {}.", "A portrait of a {}.", "A portrait of the {}.",
    "A portrait of one {}.", "A video footage of a {}.", "A video footage of the {}.",
    "A video footage of one {}.",
)  # fmt: skip
ACTION_TEMPLATES = (  # [R] the paper's action templates are not public
    "A video of someone {}.", "A person is {}.", "A footage of {}.", "A video of something {}.",
    "Something is {}.", "A video footage of {}.",
)  # fmt: skip

STOPWORDS = frozenset("""
a an the this that these those some any each every all both either neither no one
i me my mine you your yours he him his she her hers it its we us our ours they them their theirs
what which who whom whose where when why how whether
of in on at by for with from to into onto over under about after before during while until
above below between through across against among around behind beside near off out up down
and or but nor so yet if then than as because although though
is am are was were be been being has have had having do does did doing done
go goes went going gone get gets got getting
can could will would shall should may might must
not very too also just only there here first second last still
""".split())  # fmt: skip
PARTICLES = frozenset("left right up down in out away back forward backward around".split())
_SUBJECT_LIKE = frozenset("that it who which he she they someone something to".split())
_WORD = re.compile(r"[a-z]+")


def _lemmas(word: str) -> dict:
    from lemminflect import getAllLemmas

    return getAllLemmas(word)


def tag_tokens(text: str) -> list[tuple[str, str, str]]:
    """``[(word, upos, lemma)]`` for the words of ``text`` (lower-cased); stopwords get ``STOP``,
    particles ``PART``, unknown words ``X``."""
    words = _WORD.findall(text.lower())
    out: list[tuple[str, str, str]] = []
    for i, w in enumerate(words):
        if w in PARTICLES:
            out.append((w, "PART", w))
            continue
        if w in STOPWORDS:
            out.append((w, "STOP", w))
            continue
        lem = _lemmas(w)
        prev = words[i - 1] if i else ""
        if "VERB" in lem and ("NOUN" not in lem or prev in _SUBJECT_LIKE):
            tag = "VERB"
        elif "NOUN" in lem:
            tag = "NOUN"
        elif "ADJ" in lem:
            tag = "ADJ"
        elif "VERB" in lem:
            tag = "VERB"
        else:
            out.append((w, "X", w))
            continue
        out.append((w, tag, lem[tag][0]))
    return out


def _adj_capable(word: str) -> bool:
    return "ADJ" in _lemmas(word)


def count_terms(texts: Iterable[str], cfg: HeuristicConfig) -> tuple[Counter, Counter]:
    """(noun counter, verb counter) over ``texts`` by the rules of the module docstring."""
    nouns: Counter = Counter()
    verbs: Counter = Counter()
    for text in texts:
        tags = tag_tokens(text)
        for i, (w, tag, lemma) in enumerate(tags):
            nxt = tags[i + 1] if i + 1 < len(tags) else None
            if tag == "VERB":
                if cfg.verb_particles and nxt is not None and nxt[1] == "PART":
                    verbs[f"{lemma} {nxt[0]}"] += 1
                else:
                    verbs[lemma] += 1
            elif tag == "NOUN" and not (nxt is not None and nxt[1] == "NOUN" and _adj_capable(w)):
                nouns[lemma] += 1
                prev = tags[i - 1] if i else None
                if cfg.adjective_bigrams and prev is not None and prev[1] in ("ADJ", "NOUN") \
                        and _adj_capable(prev[0]):  # fmt: skip
                    nouns[f"{prev[0]} {lemma}"] += 1
            elif tag == "NOUN":  # an ADJ-capable word before a noun: modifier, not an entity
                continue
    return nouns, verbs


def _top(counter: Counter, k: int, min_count: int) -> list[str]:
    items = sorted(((-c, t) for t, c in counter.items() if c >= min_count))
    return [t for _, t in items[:k]]


def mine_vocabularies(train_texts: Iterable[str], cfg: HeuristicConfig | None = None) -> dict:
    """𝓔 and 𝓐 from the training split's questions, answers and candidates.

    Returns ``{"entities": [...], "actions": [...], "entity_counts": {...}, "action_counts":
    {...}}`` (JSON-serialisable; the CLI's ``prepare-vocab`` writes it)."""
    cfg = cfg or HeuristicConfig()
    nouns, verbs = count_terms(train_texts, cfg)
    entities = _top(nouns, cfg.entity_vocab_size, cfg.min_count)
    actions = _top(verbs, cfg.action_vocab_size, cfg.min_count)
    return {
        "entities": entities, "actions": actions,
        "entity_counts": {t: nouns[t] for t in entities},
        "action_counts": {t: verbs[t] for t in actions},
    }  # fmt: skip


def entity_prompts(entity: str) -> list[str]:
    return [t.format(entity) for t in ENTITY_TEMPLATES]


def _ing(verb: str) -> str:
    from lemminflect import getInflection

    forms = getInflection(verb, tag="VBG")
    return forms[0] if forms else verb + "ing"


def action_prompts(action: str) -> list[str]:
    """``"move left"`` → ``["A video of someone moving left.", ...]``."""
    head, *rest = action.split()
    phrase = " ".join([_ing(head), *rest])
    return [t.format(phrase) for t in ACTION_TEMPLATES]

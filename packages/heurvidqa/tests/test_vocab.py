"""T2: vocabularies from the training split only (lemminflect + stopwords)."""

import numpy as np

from heurvidqa import synthetic as syn
from heurvidqa.config import HeuristicConfig
from heurvidqa.vocab import action_prompts, entity_prompts, mine_vocabularies, tag_tokens


def _split_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        qtype = syn.QTYPES[i % len(syn.QTYPES)]
        meta = syn._qa_clip(rng, qtype)
        q, a, pool = syn.question(meta, qtype)
        cands, _ = syn._candidates(a, pool, rng)
        out += [q, a, *cands]
    return out


def test_t2_actions_exactly_the_six_and_entities_superset():
    texts = _split_texts(400, 0)
    v = mine_vocabularies(texts, HeuristicConfig())
    assert set(v["actions"]) == {"move left", "move right", "move up", "move down", "grow",
                                 "shrink"}  # fmt: skip
    assert set(syn.SHAPES) <= set(v["entities"])
    from heurvidqa.vocab import count_terms

    nouns, _ = count_terms(texts, HeuristicConfig())
    bigrams = {t for t, c in nouns.items() if c >= 5 and len(t.split()) == 2
               and t.split()[0] in syn.COLOURS and t.split()[1] in syn.SHAPES}  # fmt: skip
    assert len(bigrams) >= 10 and bigrams <= set(v["entities"])
    assert v["entity_counts"]["circle"] >= 5


def test_t2_test_only_word_is_absent():
    train = _split_texts(100, 1)
    test = ["what does the zebra do after it gallops away?"] * 20
    v = mine_vocabularies(train, HeuristicConfig(min_count=1))
    assert "zebra" not in v["entities"] and "gallop away" not in v["actions"]
    both = mine_vocabularies(train + test, HeuristicConfig(min_count=1))
    assert "zebra" in both["entities"] and "gallop away" in both["actions"]


def test_tagging_rules():
    tags = {w: (t, lem) for w, t, lem in tag_tokens("what color is the object that moves left?")}
    assert tags["moves"] == ("VERB", "move") and tags["left"][0] == "PART"
    assert tags["object"][0] == "NOUN" and tags["what"][0] == "STOP"
    v = mine_vocabularies(["the red circle grows"] * 5, HeuristicConfig())
    assert "red circle" in v["entities"] and "circle" in v["entities"] and v["actions"] == ["grow"]
    v = mine_vocabularies(["it moves left"] * 5, HeuristicConfig(verb_particles=False))
    assert v["actions"] == ["move"]


def test_top_k_and_min_count():
    texts = ["a circle"] * 9 + ["a square"] * 7 + ["a star"] * 4
    v = mine_vocabularies(texts, HeuristicConfig(entity_vocab_size=1, min_count=5))
    assert v["entities"] == ["circle"]
    v = mine_vocabularies(texts, HeuristicConfig(min_count=5))
    assert v["entities"] == ["circle", "square"]


def test_prompts():
    assert len(entity_prompts("red circle")) == 12
    assert entity_prompts("red circle")[3] == "A video of a red circle."
    assert action_prompts("move left")[0] == "A video of someone moving left."
    assert action_prompts("shrink")[1] == "A person is shrinking."

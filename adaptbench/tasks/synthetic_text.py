"""The embedded default data: small GLUE-shaped tasks generated from real English words and templates.

SYNTHETIC. These tasks exist so that the demo and the tests run offline with nothing but the repo.
They are never compared with paper numbers. Each task has compositional structure that a bag of
words cannot solve (negation, contrast, agreement across attractors, argument roles), and its
validation split draws content words from a held-out vocabulary, so a model must bring lexical
knowledge from pretraining: a pretrained encoder clearly beats the same network randomly initialised.

Every generator is a pure function of (split, n, seed): the same call gives the same rows.
"""

from __future__ import annotations

import random

# ---- vocabulary: (train words, held-out validation words) ------------------------------------

POSITIVE = (
    ["good", "great", "wonderful", "excellent", "brilliant", "delightful", "superb", "charming",
     "moving", "enjoyable", "fantastic", "beautiful", "clever", "fresh"],
    ["marvelous", "splendid", "terrific", "outstanding", "lovely", "magnificent", "gripping", "captivating"],
)
NEGATIVE = (
    ["bad", "terrible", "awful", "boring", "dull", "weak", "clumsy", "tedious", "poor", "horrible",
     "annoying", "bland", "messy", "stale"],
    ["dreadful", "atrocious", "lousy", "mediocre", "tiresome", "abysmal", "lifeless", "forgettable"],
)
ASPECTS = ["the movie", "the plot", "the acting", "the soundtrack", "the ending", "the dialogue",
           "the cast", "the pacing", "the script", "the film", "the story", "the camera work",
           "the lead performance", "the second half", "the opening scene", "the humor"]

# (singular, plural)
NOUNS = (
    [("dog", "dogs"), ("teacher", "teachers"), ("key", "keys"), ("child", "children"),
     ("author", "authors"), ("bottle", "bottles"), ("farmer", "farmers"), ("window", "windows"),
     ("doctor", "doctors"), ("song", "songs"), ("student", "students"), ("car", "cars"),
     ("painting", "paintings"), ("neighbor", "neighbors"), ("box", "boxes"), ("woman", "women")],
    [("pilot", "pilots"), ("lamp", "lamps"), ("senator", "senators"), ("mouse", "mice"),
     ("violin", "violins"), ("nurse", "nurses"), ("bridge", "bridges"), ("goose", "geese")],
)
ATTRACTOR_HEADS = ["near", "behind", "next to", "beside", "with", "like", "from"]
# (singular form, plural form, continuation)
PREDICATES = [("is", "are", "on the table"), ("was", "were", "quite old"), ("has", "have", "a long history"),
              ("seems", "seem", "very quiet"), ("looks", "look", "strange today"), ("belongs", "belong", "to the museum"),
              ("needs", "need", "more attention"), ("appears", "appear", "in the photo")]
RELATIVE_VERBS = [("saw", "saw"), ("likes", "like"), ("found", "found"), ("praises", "praise")]

AGENTS = ["the lawyer", "the chef", "the soldier", "the artist", "the farmer", "the nurse",
          "the coach", "the banker", "the tourist", "the priest", "the engineer", "the singer"]
# (base, past, participle, train synonyms as (past, participle, base), held-out synonyms)
ACTIONS = [
    (("help", "helped", "helped"), [("assisted", "assisted", "assist")], [("aided", "aided", "aid")]),
    (("call", "called", "called"), [("phoned", "phoned", "phone")], [("telephoned", "telephoned", "telephone")]),
    (("hit", "hit", "hit"), [("struck", "struck", "strike")], [("punched", "punched", "punch")]),
    (("meet", "met", "met"), [("encountered", "encountered", "encounter")], [("greeted", "greeted", "greet")]),
    (("blame", "blamed", "blamed"), [("accused", "accused", "accuse")], [("faulted", "faulted", "fault")]),
    (("follow", "followed", "followed"), [("chased", "chased", "chase")], [("pursued", "pursued", "pursue")]),
    (("praise", "praised", "praised"), [("complimented", "complimented", "compliment")], [("applauded", "applauded", "applaud")]),
    (("watch", "watched", "watched"), [("observed", "observed", "observe")], [("monitored", "monitored", "monitor")]),
    (("pay", "paid", "paid"), [("compensated", "compensated", "compensate")], [("reimbursed", "reimbursed", "reimburse")]),
    (("teach", "taught", "taught"), [("trained", "trained", "train")], [("instructed", "instructed", "instruct")]),
]
PLACES = ["in the kitchen", "at the station", "in the garden", "near the river", "at the market",
          "in the office", "on the beach", "at the hospital", "in the library", "on the bus"]
TIMES = ["yesterday", "this morning", "last night", "on monday", "in the spring", "after lunch",
         "before dawn", "last week"]


def _split_index(split: str) -> int:
    return 0 if split == "train" else 1


# ---- sentiment: negation and contrast ----------------------------------------------------------

def _sentiment_row(rng: random.Random, split: str) -> dict:
    pos, neg = POSITIVE[_split_index(split)], NEGATIVE[_split_index(split)]

    def adj(polarity: int) -> str:
        return rng.choice(pos if polarity else neg)

    a, b = rng.sample(ASPECTS, 2)
    p1, p2 = rng.randrange(2), rng.randrange(2)
    form = rng.randrange(7)
    if form == 0:
        return {"sentence": f"{a} was {adj(p1)} .", "label": p1}
    if form == 1:  # negation flips
        return {"sentence": f"{a} was not {adj(p1)} .", "label": 1 - p1}
    if form == 2:  # contrast: the clause after "but" decides
        return {"sentence": f"{a} was {adj(p1)} , but {b} was {adj(p2)} .", "label": p2}
    if form == 3:  # concession: the main clause decides
        return {"sentence": f"although {a} was {adj(p1)} , {b} was {adj(p2)} .", "label": p2}
    if form == 4:  # expectation vs outcome
        return {"sentence": f"i expected {a} to be {adj(p1)} , but it was {adj(p2)} .", "label": p2}
    if form == 5:  # negated contrast clause
        return {"sentence": f"{a} was {adj(p1)} , but {b} was not {adj(p2)} .", "label": 1 - p2}
    # double negation
    return {"sentence": f"nobody could say that {a} was not {adj(p1)} .", "label": p1}


# ---- agreement: subject-verb agreement across attractors --------------------------------------

def _agreement_row(rng: random.Random, split: str) -> dict:
    nouns = NOUNS[_split_index(split)]
    (s1, p1), (s2, p2) = rng.sample(nouns, 2)
    subj_plural, attractor_plural = rng.randrange(2), rng.randrange(2)
    subj = p1 if subj_plural else s1
    attractor = p2 if attractor_plural else s2
    sing, plur, rest = rng.choice(PREDICATES)
    grammatical = rng.randrange(2)
    verb = (plur if subj_plural else sing) if grammatical else (sing if subj_plural else plur)
    form = rng.randrange(3)
    if form == 0:
        text = f"the {subj} {rng.choice(ATTRACTOR_HEADS)} the {attractor} {verb} {rest} ."
    elif form == 1:  # object relative clause: the embedded verb agrees with the attractor
        rel_s, rel_p = rng.choice(RELATIVE_VERBS)
        text = f"the {subj} that the {attractor} {rel_p if attractor_plural else rel_s} {verb} {rest} ."
    else:  # quantifier fixes the number
        quant, subj_plural = (("every", 0) if rng.randrange(2) else ("many", 1))
        subj = p1 if subj_plural else s1
        verb = (plur if subj_plural else sing) if grammatical else (sing if subj_plural else plur)
        text = f"{quant} {subj} {rng.choice(ATTRACTOR_HEADS)} the {attractor} {verb} {rest} ."
    return {"sentence": text, "label": grammatical}


# ---- events: shared by roles and sts -------------------------------------------------------------

def _verb_forms(rng: random.Random, action, split: str, paraphrase: bool):
    """(past, participle, base) of the action, possibly a synonym (held-out ones in validation)."""
    (base, past, part), train_syn, heldout_syn = action
    if paraphrase:
        pool = train_syn if split == "train" else heldout_syn
        return rng.choice(pool)
    return past, part, base


def _render(agent: str, patient: str, forms, place: str, time: str, passive: bool, negated: bool = False) -> str:
    past, part, base = forms
    if passive:
        core = f"{patient} was not {part} by {agent}" if negated else f"{patient} was {part} by {agent}"
    else:
        core = f"{agent} did not {base} {patient}" if negated else f"{agent} {past} {patient}"
    return f"{core} {place} {time} ."


def _roles_row(rng: random.Random, split: str) -> dict:
    agent, patient = rng.sample(AGENTS, 2)
    action = rng.choice(ACTIONS)
    place, time = rng.choice(PLACES), rng.choice(TIMES)
    s1 = _render(agent, patient, _verb_forms(rng, action, split, False), place, time, passive=False)
    label = rng.randrange(2)  # balanced classes; the form is drawn within the class
    form = rng.randrange(3) if label else 3 + rng.randrange(4)
    forms = lambda paraphrase: _verb_forms(rng, action, split, paraphrase)  # noqa: E731
    if form == 0:  # passive, same meaning
        s2 = _render(agent, patient, forms(False), place, time, passive=True)
    elif form == 1:  # synonym verb, active
        s2 = _render(agent, patient, forms(True), place, time, passive=False)
    elif form == 2:  # synonym verb, passive
        s2 = _render(agent, patient, forms(True), place, time, passive=True)
    elif form == 3:  # roles swapped, same words
        s2 = _render(patient, agent, forms(False), place, time, passive=False)
    elif form == 4:  # passive with roles swapped
        s2 = _render(patient, agent, forms(False), place, time, passive=True)
    elif form == 5:  # negated, either voice
        s2 = _render(agent, patient, forms(rng.randrange(2) == 1), place, time, rng.randrange(2) == 1, negated=True)
    else:  # synonym verb with roles swapped
        s2 = _render(patient, agent, forms(True), place, time, passive=rng.randrange(2) == 1)
    return {"sentence1": s1, "sentence2": s2, "label": label}


STS_SLOT_WEIGHTS = {"agent": 1.5, "action": 1.5, "patient": 1.0, "place": 0.5, "time": 0.5}  # sums to 5


def _sts_row(rng: random.Random, split: str) -> dict:
    frame = {"agent": None, "patient": None}
    frame["agent"], frame["patient"] = rng.sample(AGENTS, 2)
    frame.update(action=rng.randrange(len(ACTIONS)), place=rng.choice(PLACES), time=rng.choice(TIMES))
    other = dict(frame)
    n_changes = rng.randrange(len(STS_SLOT_WEIGHTS) + 1)
    for slot in rng.sample(list(STS_SLOT_WEIGHTS), n_changes):
        if slot == "agent":
            other["agent"] = rng.choice([a for a in AGENTS if a not in (frame["agent"], frame["patient"])])
        elif slot == "patient":
            other["patient"] = rng.choice([a for a in AGENTS if a not in (frame["agent"], frame["patient"])])
        elif slot == "action":
            other["action"] = rng.choice([i for i in range(len(ACTIONS)) if i != frame["action"]])
        elif slot == "place":
            other["place"] = rng.choice([p for p in PLACES if p != frame["place"]])
        else:
            other["time"] = rng.choice([t for t in TIMES if t != frame["time"]])
    score = sum(w for slot, w in STS_SLOT_WEIGHTS.items() if frame[slot] == other[slot])

    def text(f: dict) -> str:
        forms = _verb_forms(rng, ACTIONS[f["action"]], split, paraphrase=rng.randrange(2) == 1)
        return _render(f["agent"], f["patient"], forms, f["place"], f["time"], passive=rng.randrange(2) == 1)

    return {"sentence1": text(frame), "sentence2": text(other), "label": float(score)}


GENERATORS = {
    "sentiment": _sentiment_row,
    "agreement": _agreement_row,
    "roles": _roles_row,
    "sts": _sts_row,
}


def generate(generator: str, split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` rows of a synthetic task. Train and validation use disjoint RNG streams (and, where the
    task has one, disjoint content vocabularies)."""
    if generator not in GENERATORS:
        raise KeyError(f"unknown synthetic generator '{generator}'; available: {sorted(GENERATORS)}")
    rng = random.Random(f"{generator}/{split}/{seed}")
    return [GENERATORS[generator](rng, split) for _ in range(n)]

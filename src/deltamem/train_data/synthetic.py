"""Seeded synthetic multi-session chats: facts about people, stated, sometimes updated, then asked.

Every episode is a fresh `random.Random` seeded with a SHA-256 of (split, seed, index), so records
are identical across processes and Python hash seeds, and `split="heldout"` never reuses a train
seed. No answer value ever appears in the final question (checked at construction).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Mapping, Sequence

DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    "city": ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Sydney", "Toronto", "Nairobi"],
    "job": ["teacher", "nurse", "pilot", "chef", "lawyer", "engineer", "farmer", "dentist"],
    "pet": ["dog", "cat", "parrot", "rabbit", "hamster", "turtle", "goldfish", "lizard"],
    "favourite colour": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"],
    "favourite food": ["pizza", "sushi", "tacos", "curry", "pasta", "dumplings", "paella", "ramen"],
    "sport": ["tennis", "football", "swimming", "cycling", "rugby", "golf", "hockey", "volleyball"],
}
DEFAULT_PEOPLE: list[str] = [
    "Alice",
    "Bruno",
    "Chen",
    "Dara",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemal",
    "Leila",
    "Marta",
    "Nikhil",
    "Olga",
    "Pablo",
]

# Per attribute: statement templates, update templates, question templates.
# Placeholders: {p} person, {v} value, {an} value with its indefinite article, {a} attribute name.
TEMPLATES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "city": (
        ["My friend {p} just moved to {v}.", "{p} lives in {v} these days.", "By the way, {p} has settled in {v}."],
        ["{p} moved again and lives in {v} now.", "Update on {p}: moved house once more, to {v}."],
        ["Where does {p} live now?", "Which city is {p} living in now?"],
    ),
    "job": (
        ["{p} works as {an}.", "{p} got a job as {an}.", "These days {p} earns a living as {an}."],
        ["{p} changed careers and is now {an}.", "{p} switched jobs and works as {an} now."],
        ["What does {p} do for a living now?", "What is {p}'s job now?"],
    ),
    "pet": (
        ["{p} adopted {an} last month.", "{p} has {an} at home.", "{p} just got {an} as a pet."],
        ["{p} rehomed the old pet and now keeps {an}.", "{p}'s pet is {an} now."],
        ["What pet does {p} have now?", "What kind of animal is {p}'s pet now?"],
    ),
    "favourite colour": (
        ["{p}'s favourite colour is {v}.", "{p} says {v} is the best colour."],
        ["{p} has a new favourite colour: {v}.", "{p} changed favourite colour to {v}."],
        ["What is {p}'s favourite colour now?"],
    ),
    "favourite food": (
        ["{p}'s favourite food is {v}.", "{p} could eat {v} every single day."],
        ["{p} has a new favourite food now: {v}.", "{p} went off the old favourite and loves {v} most."],
        ["What is {p}'s favourite food now?"],
    ),
    "sport": (
        ["{p} spends every weekend on {v}.", "{p}'s sport is {v}.", "{p} is really into {v}."],
        ["{p} switched sports and is all about {v} now.", "{p} took up {v} instead of the old sport."],
        ["Which sport does {p} do now?"],
    ),
}
GENERIC_TEMPLATES = (
    ["{p}'s {a} is {v}.", "Something about {p}: the {a} is {v}."],
    ["{p}'s {a} has changed; it is {v} now."],
    ["What is {p}'s {a} now?"],
)
ACKS = ["Thanks, I'll keep that in mind.", "Good to know!", "Noted.", "Got it.", "That's nice to hear."]
NEWS_PROMPTS = ["Any news about my friends?", "What's new with my friends?", "Remind me of something about my friends."]
UPDATE_ACKS = ["Thanks for the update.", "Got it, I'll remember the change.", "Noted, good to know things changed."]
FILLERS: list[tuple[str, str]] = [
    ("Any tips for sleeping better?", "A regular bedtime and less screen time in the evening usually help."),
    ("I finally finished that long book I was reading.", "Congratulations! Finishing a long book feels great."),
    ("The weather has been strange this week.", "It has been unpredictable lately; a light jacket never hurts."),
    ("Can you suggest a quick breakfast idea?", "Oatmeal with fruit and nuts is fast and filling."),
    ("I'm trying to drink more water.", "Keeping a bottle on your desk makes it easy to remember."),
    ("What's a good way to learn new words?", "Short daily reviews with flashcards work well for many people."),
    ("My laptop has been running slowly.", "Closing unused programs and restarting it often helps."),
    ("I watched a documentary about volcanoes last night.", "Volcanoes are fascinating; they shape whole landscapes."),
    ("Do you have advice for staying focused?", "Try working in short blocks with small breaks in between."),
    ("I might repaint the hallway soon.", "A fresh coat of paint can change how a space feels."),
    ("How do I keep houseplants alive?", "Check the soil before watering and give them enough light."),
    ("I've started keeping a journal.", "That's a nice habit; writing things down can clear your head."),
    ("The train was late again this morning.", "That's frustrating; hopefully the schedule improves soon."),
    ("Any ideas for a rainy afternoon?", "A board game, a good film or baking something simple could be fun."),
]


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _contains(haystack: str, needle: str) -> bool:
    """Whether normalised `needle` occurs as whole word(s) in normalised `haystack`."""
    return f" {normalize(needle)} " in f" {normalize(haystack)} "


def score(output: str, record: Mapping) -> float:
    """1.0 if the normalised answer is a word (sequence) of the output's first non-blank line, else 0.0."""
    lines = output.strip().splitlines()
    return float(bool(lines) and _contains(lines[0], record["answer"]))


def _article(value: str) -> str:
    return ("an " if value[:1].lower() in "aeiou" else "a ") + value


def episode_seed(split: str, seed: int, index: int) -> int:
    """A stable 256-bit integer for one episode (never Python's salted `hash`)."""
    return int.from_bytes(hashlib.sha256(f"deltamem.synthetic|{split}|{seed}|{index}".encode()).digest(), "big")


class SyntheticChats:
    """Multi-session chats about people's attributes, for training and probing δ-mem.

    Each episode states `facts` (person, attribute) facts across 1..N sessions (some updated in a
    later session with probability `update_prob`, needing >= 2 sessions), pads every session with
    `distractor_turns` small-talk pairs, and asks about one fact; the answer is the current value as
    a bare word. Facts are stated by the user and acknowledged, or (`fact_speaker="assistant"`)
    stated by the assistant when the user asks for news (the fact then ends its exchange). No answer
    value appears in the final question, nor in any filler, acknowledgement or request for news.
    """

    def __init__(
        self,
        num_episodes: int,
        seed: int = 0,
        split: str = "train",
        sessions: Sequence[int] | int = (2, 3),
        facts: int = 2,
        distractor_turns: int = 2,
        update_prob: float = 0.3,
        attributes: Mapping[str, Sequence[str]] | None = None,
        people: Sequence[str] | None = None,
        system_prompt: str = "You are a helpful assistant with a memory of earlier conversations.",
        fact_speaker: str = "user",
    ) -> None:
        source = DEFAULT_ATTRIBUTES if attributes is None else attributes
        attrs = {str(k): [str(v) for v in vals] for k, vals in source.items()}
        names = [str(p) for p in (people if people is not None else DEFAULT_PEOPLE)]
        bounds = [int(sessions)] * 2 if isinstance(sessions, int) else [int(s) for s in sessions]
        if int(num_episodes) < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1]:
            raise ValueError(f"sessions must be (min, max) with 1 <= min <= max, got {sessions!r}")
        if not attrs:
            raise ValueError("attributes must name at least one attribute")
        for name, vals in attrs.items():
            if len({normalize(v) for v in vals}) != len(vals) or len(vals) < 2 or not all(normalize(v) for v in vals):
                raise ValueError(f"attributes[{name!r}] needs >= 2 distinct non-empty values, got {vals}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"people must be a non-empty list of distinct names, got {names}")
        if not 1 <= int(facts) <= len(names) * len(attrs):
            raise ValueError(f"facts must be in [1, people x attributes = {len(names) * len(attrs)}], got {facts}")
        if int(distractor_turns) < 0:
            raise ValueError(f"distractor_turns must be >= 0, got {distractor_turns}")
        if fact_speaker not in ("user", "assistant"):
            raise ValueError(f"fact_speaker must be 'user' or 'assistant', got {fact_speaker!r}")
        if not 0.0 <= float(update_prob) <= 1.0:
            raise ValueError(f"update_prob must be in [0, 1], got {update_prob}")
        all_values = [v for vals in attrs.values() for v in vals]
        texts = names + [q.format(p="", a=a) for a in attrs for q in self._templates(a)[2]]
        for value in all_values:
            if any(_contains(text, value) for text in texts):
                raise ValueError(f"attributes: value {value!r} collides with a person name or a question")
        self.num_episodes, self.seed, self.split = int(num_episodes), int(seed), split
        self.sessions, self.facts, self.distractor_turns = tuple(bounds), int(facts), int(distractor_turns)
        self.update_prob, self.attributes, self.people = float(update_prob), attrs, names
        self.system_prompt, self.fact_speaker = system_prompt, fact_speaker
        self._pairs = [(p, a) for p in names for a in attrs]
        clean = lambda text: not any(_contains(text, v) for v in all_values)  # noqa: E731
        self._fillers = [f for f in FILLERS if clean(f[0]) and clean(f[1])] or [("Hello again!", "Hi there.")]
        self._acks = [a for a in ACKS if clean(a)] or ["OK."]
        self._update_acks = [a for a in UPDATE_ACKS if clean(a)] or ["OK."]
        self._news_prompts = [a for a in NEWS_PROMPTS if clean(a)] or ["Any news?"]

    score = staticmethod(score)

    @staticmethod
    def _templates(attribute: str) -> tuple[list[str], list[str], list[str]]:
        return TEMPLATES.get(attribute, GENERIC_TEMPLATES)

    def _exchange(self, rng: random.Random, fact: str, replies: list[str], k: int) -> tuple[str, str, int]:
        """(user, assistant, fact id): the user states the fact and the assistant acknowledges it, or
        (fact_speaker="assistant") the user asks for news and the assistant states the fact."""
        if self.fact_speaker == "assistant":
            return rng.choice(self._news_prompts), fact, k
        return fact, rng.choice(replies), k

    def __len__(self) -> int:
        return self.num_episodes

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"episode {index} out of range for {len(self)} episodes")
        index %= len(self)
        rng = random.Random(episode_seed(self.split, self.seed, index))
        n_sessions = rng.randint(*self.sessions)
        turns: list[list[tuple[str, str, int | None]]] = [[] for _ in range(n_sessions)]
        facts = []
        for k, (person, attr) in enumerate(rng.sample(self._pairs, self.facts)):
            state_t, update_t, _ = self._templates(attr)
            value = rng.choice(self.attributes[attr])
            fact = {"person": person, "attribute": attr, "value": value, "stale_value": None}
            updated = n_sessions >= 2 and rng.random() < self.update_prob
            first = rng.randrange(n_sessions - 1 if updated else n_sessions)
            text = rng.choice(state_t).format(p=person, v=value, an=_article(value), a=attr)
            turns[first].append(self._exchange(rng, text, self._acks, k))
            if updated:
                new = rng.choice([v for v in self.attributes[attr] if v != value])
                fact.update(value=new, stale_value=value)
                text = rng.choice(update_t).format(p=person, v=new, an=_article(new), a=attr)
                turns[rng.randint(first + 1, n_sessions - 1)].append(self._exchange(rng, text, self._update_acks, k))
            facts.append(fact)
        for session in turns:
            count = max(self.distractor_turns, 0 if session else 1)
            picks = (
                rng.sample(self._fillers, count) if count <= len(self._fillers) else rng.choices(self._fillers, k=count)
            )
            session.extend((u, a, None) for u, a in picks)
            rng.shuffle(session)
        asked = rng.randrange(self.facts)
        target = facts[asked]
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        evidence, session_starts = [], []
        for s, session in enumerate(turns):
            for t, (user, reply, fact_id) in enumerate(session):
                if fact_id == asked:
                    evidence.append(len(messages) + (self.fact_speaker == "assistant"))
                if t == 0:
                    session_starts.append(len(messages))
                content = f"(Session {s + 1}) {user}" if t == 0 else user
                messages += [{"role": "user", "content": content}, {"role": "assistant", "content": reply}]
        question = rng.choice(self._templates(target["attribute"])[2]).format(p=target["person"], a=target["attribute"])
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": target["value"]}]
        meta = {
            "person": target["person"],
            "attribute": target["attribute"],
            "answer": target["value"],
            "candidates": list(self.attributes[target["attribute"]]),
            "was_updated": target["stale_value"] is not None,
            "stale_value": target["stale_value"],
            "sessions": n_sessions,
            "session_starts": session_starts,  # index in `messages` of each session's first message
            "evidence_turns": evidence,
            "facts": facts,
            "split": self.split,
            "seed": self.seed,
            "index": index,
        }
        return {
            "id": f"synthetic-{self.split}-{self.seed}-{index}",
            "messages": messages,
            "answer": target["value"],
            "meta": meta,
        }

    def __repr__(self) -> str:
        return (
            f"SyntheticChats(num_episodes={self.num_episodes}, seed={self.seed}, split={self.split!r}, "
            f"sessions={self.sessions}, facts={self.facts}, update_prob={self.update_prob})"
        )

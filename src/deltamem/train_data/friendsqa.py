"""FriendsQA (emorynlp/FriendsQA, Apache-2.0) as memory episodes: a long multi-party dialogue.

Files: `data[] = {title: "sNN_eNN_cNN", paragraphs: [{"utterances:": [{uid, speakers, utterance}],
qas: [{id, question, answers: [{answer_text, utterance_id, inner_start, inner_end, is_speaker}]}]}]}`.
The scenes of one episode (sNN_eNN, scenes in cNN order, from all files) form one document, one
message per utterance rendered "Speaker: text" (several speakers joined with " and "). An episode
asks one question about one scene; when the Friends episode exceeds the budget, a window grown from
the answer's utterance (inside its scene first) is kept. Distractors: other Friends episodes of the
same split. The text is space-tokenised ("Jordie ."): answers are stripped of a trailing " ." artifact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .documents import Document, DocumentEpisodes, Question, chunk_spans, require_file

_SCENE = re.compile(r"^(s\d+_e\d+)_c(\d+)$")
_TRAILING = re.compile(r"(\s+[.,!?;:]+)+$")


def clean_answer(text: str) -> str:
    """Strip, then drop trailing space-separated punctuation tokens ("Jordie ." -> "Jordie")."""
    return _TRAILING.sub("", str(text).strip()).strip()


def _speaker(speakers: Sequence[str]) -> str:
    return " and ".join(str(s) for s in speakers) or "Unknown"


class FriendsQAEpisodes(DocumentEpisodes):
    """FriendsQA questions over Friends episodes as dialogue histories. `paths`: the FriendsQA JSON
    files (e.g. dev and test); the other options are those of `DocumentEpisodes`."""

    source = "friendsqa"
    default_instructions = (
        "Answer the question about the conversation you have read with a short phrase.\n\nQuestion: {question}",
        "Based on the dialogue shared earlier, answer briefly.\n\nQuestion: {question}",
    )
    default_system_prompt = "You are a helpful assistant. Answer questions about the conversations shared earlier."

    def __init__(self, paths: Sequence[str], **options: Any) -> None:
        super().__init__(**options)
        if isinstance(paths, str) or not paths:
            raise ValueError(f"paths must be a non-empty list of FriendsQA JSON files, got {paths!r}")
        self.paths = [str(p) for p in paths]

    def _scenes(self) -> dict[str, list[tuple[int, str, Mapping, str]]]:
        """Episode id -> [(scene number, scene id, paragraph, file name)], checked."""
        episodes: dict[str, list[tuple[int, str, Mapping, str]]] = {}
        for path in self.paths:
            file = require_file(path)
            name = file.name
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}: bad JSON: {exc.msg} (line {exc.lineno})") from None
            if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
                raise ValueError(f"{name}: missing field 'data' (a list of scenes)")
            for k, scene in enumerate(data["data"]):
                title = scene.get("title") if isinstance(scene, Mapping) else None
                match = _SCENE.match(str(title or ""))
                if match is None:
                    raise ValueError(f"{name}: scene {k}: field 'title' must be a scene id sNN_eNN_cNN, got {title!r}")
                paras = scene.get("paragraphs")
                if not isinstance(paras, list) or not paras or not isinstance(paras[0], Mapping):
                    raise ValueError(f"{name}: scene {k} (id {title}): missing field 'paragraphs'")
                for key in ("utterances:", "qas"):
                    if not isinstance(paras[0].get(key), list):
                        raise ValueError(f"{name}: scene {k} (id {title}): missing field 'paragraphs[0].{key}'")
                entry = (int(match.group(2)), title, paras[0], f"{name}: scene {k}")
                episodes.setdefault(match.group(1), []).append(entry)
        return episodes

    def _read(self) -> tuple[list[Document], list[Question]]:
        docs, questions = [], []
        for episode, scenes in sorted(self._scenes().items()):
            scenes.sort(key=lambda s: s[0])
            pieces: list[str] = []
            spans: dict[tuple[str, int], tuple[int, int]] = {}  # (scene, uid) -> piece range
            bounds: dict[str, tuple[int, int]] = {}
            for _, scene_id, para, where in scenes:
                first = len(pieces)
                for u, utt in enumerate(para["utterances:"]):
                    if not isinstance(utt, Mapping) or not isinstance(utt.get("utterance"), str):
                        raise ValueError(f"{where} (id {scene_id}), utterance {u}: missing field 'utterance'")
                    if not isinstance(utt.get("speakers"), list):
                        raise ValueError(f"{where} (id {scene_id}), utterance {u}: missing field 'speakers'")
                    start, text = len(pieces), utt["utterance"].strip()
                    who = _speaker(utt["speakers"])
                    for s, e in chunk_spans(text, max(16, self.chunk_chars - len(who) - 2)) or [(0, 0)]:
                        pieces.append(f"{who}: {text[s:e]}")
                    spans[(scene_id, int(utt.get("uid", u)))] = (start, len(pieces))
                bounds[scene_id] = (first, len(pieces))
            season, number = episode[1:].split("_e")
            docs.append(Document(episode, f"Friends, season {int(season)} episode {int(number)}", tuple(pieces)))
            for _, scene_id, para, where in scenes:
                for j, qa in enumerate(para["qas"]):
                    q = self._question(qa, f"{where} (id {scene_id}), qa {j}", episode, scene_id, spans, bounds)
                    if q is not None:
                        questions.append(q)
        return docs, questions

    def _question(
        self,
        qa: object,
        where: str,
        episode: str,
        scene_id: str,
        spans: Mapping[tuple[str, int], tuple[int, int]],
        bounds: Mapping[str, tuple[int, int]],
    ) -> Question | None:
        if not isinstance(qa, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(qa).__name__}")
        for key in ("id", "question", "answers"):
            if key not in qa:
                raise ValueError(f"{where}: missing field {key!r}")
        answers = []
        for a, ans in enumerate(qa["answers"]):
            if not isinstance(ans, Mapping) or "answer_text" not in ans or "utterance_id" not in ans:
                raise ValueError(f"{where}: missing field 'answers[{a}].answer_text' or 'answers[{a}].utterance_id'")
            if (scene_id, int(ans["utterance_id"])) not in spans:
                bad = ans["utterance_id"]
                raise ValueError(f"{where}: field 'answers[{a}].utterance_id' ({bad}) is not in the scene")
            if clean_answer(ans["answer_text"]):
                answers.append((clean_answer(ans["answer_text"]), ans))
        if not answers:
            return None
        answer, chosen = answers[0]
        question = re.sub(r"\s+([?.!])$", r"\1", str(qa["question"]).strip())
        return Question(
            qid=str(qa["id"]),
            doc_id=episode,
            text=question,
            answer=answer,
            anchor=spans[(scene_id, int(chosen["utterance_id"]))],
            region=bounds[scene_id],
            evidence=answer,
            meta={
                "scene_id": scene_id,
                "utterance_id": int(chosen["utterance_id"]),
                "is_speaker": bool(chosen.get("is_speaker", False)),
                "all_answers": sorted({a for a, _ in answers}),
            },
        )

    def __repr__(self) -> str:
        return f"FriendsQAEpisodes(paths={self.paths!r}, " + super().__repr__().split("(", 1)[1]

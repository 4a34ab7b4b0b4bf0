"""Training-episode sources. Each yields plain dicts, one per episode:

`{"id": str, "messages": [{"role", "content"}, ...], "answer": str, "meta": dict}` where `messages`
is an optional system message, the history, the last user message (the question) and the final
assistant message, whose content is `answer`. Sources have `__len__`, a deterministic `__getitem__`
and `__iter__`, are cheap to construct and take only keyword arguments of plain types (Hydra
`_target_`).
"""

from .jsonl import JsonlChats
from .qasper import QasperEpisodes
from .synthetic import SyntheticChats

__all__ = ["SyntheticChats", "QasperEpisodes", "JsonlChats"]

"""Training-episode sources. Each yields plain dicts, one per episode:

`{"id": str, "messages": [{"role", "content"}, ...], "answer": str, "meta": dict}` where `messages`
is an optional system message, the history, the last user message (the question) and the final
assistant message, whose content is `answer`. Sources have `__len__`, a deterministic `__getitem__`
and `__iter__`, are cheap to construct and take only keyword arguments of plain types (Hydra
`_target_`).
"""

from .bamboo import BambooEpisodes
from .blend import BlendEpisodes
from .covidqa import CovidQAEpisodes
from .friendsqa import FriendsQAEpisodes
from .hub_chats import HubChats
from .jsonl import JsonlChats
from .leval import LEvalEpisodes
from .qasper import QasperRawEpisodes
from .synthetic import SyntheticChats

__all__ = ["SyntheticChats", "QasperRawEpisodes", "HubChats", "JsonlChats"]
__all__ += ["CovidQAEpisodes", "FriendsQAEpisodes", "LEvalEpisodes", "BambooEpisodes", "BlendEpisodes"]

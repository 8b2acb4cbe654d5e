"""Sources: where videos come from (files, URLs, Pexels, Wikimedia Commons), as lazy refs fetched into memory."""

from streampose.sources.base import VIDEO_SUFFIXES, Page, SourceFilters, Video, VideoRef
from streampose.sources.fetch import fetch
from streampose.sources.http import USER_AGENT
from streampose.sources.refs import RefStream, local_ref, refs

__all__ = [
    "USER_AGENT",
    "VIDEO_SUFFIXES",
    "Page",
    "RefStream",
    "SourceFilters",
    "Video",
    "VideoRef",
    "fetch",
    "local_ref",
    "refs",
]

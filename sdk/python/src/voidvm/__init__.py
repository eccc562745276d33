"""VoidVM SDK: ``VoidVMClient`` (blocking) and ``AsyncVoidVMClient`` (asyncio) for the VoidVM
REST API and WebSocket feed. Answers are the envelope's ``data`` as dicts; errors are
``VoidVMError``."""

from ._async import AsyncVoidVMClient
from ._errors import VoidVMError
from ._sync import VoidVMClient

__all__ = ["AsyncVoidVMClient", "VoidVMClient", "VoidVMError"]
__version__ = "0.1.0"

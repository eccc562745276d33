"""VoidVM SDK: ``VoidVMClient`` (blocking) and ``AsyncVoidVMClient`` (asyncio) for the VoidVM
REST API and WebSocket feed. Answers are the envelope's ``data`` as dicts; errors are
``VoidVMError``. ``verify_webhook_signature`` checks a webhook delivery."""

from ._async import AsyncVoidVMClient
from ._console import AsyncSerialConsole, AsyncVncConsole, SerialConsole, VncConsole
from ._errors import VoidVMError
from ._signature import verify_webhook_signature
from ._sync import VoidVMClient

__all__ = [
    "AsyncSerialConsole", "AsyncVncConsole", "AsyncVoidVMClient", "SerialConsole", "VncConsole",
    "VoidVMClient", "VoidVMError", "verify_webhook_signature",
]
__version__ = "0.1.0"

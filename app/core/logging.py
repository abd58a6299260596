"""Logging set-up: one format, and phone numbers masked in every record whatever its source."""

from __future__ import annotations

import logging
from typing import Any

from app.core.phone import mask_phones_in

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_FORMATTER = logging.Formatter()


class _MaskingRecordFactory:
    """Masks numbers as each record is made, so every handler (ours, uvicorn's, arq's, a test's
    capture) sees the masked text. Only records that pass the level check are made."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.wrapped(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it, as logging does
            return record
        masked = mask_phones_in(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            # Formatters cache the traceback text in exc_text; fill it in, masked.
            record.exc_text = mask_phones_in(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask_phones_in(record.stack_info)
        return record


def install_phone_masking() -> None:
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _MaskingRecordFactory):
        logging.setLogRecordFactory(_MaskingRecordFactory(factory))


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level.upper(), format=_FORMAT)
    root.setLevel(level.upper())
    # httpx logs every request at INFO: a line per Twilio call on the hot path. Debug only.
    if root.level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    arq_logger = logging.getLogger("arq")
    if arq_logger.handlers:  # the arq CLI brought its own handler: print each record once
        arq_logger.propagate = False
    install_phone_masking()

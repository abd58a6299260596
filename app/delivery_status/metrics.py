"""How long Twilio's news takes to reach us.

Callbacks carry no usable time of their own: `RawDlrDoneDate` is only on some delivered and
undelivered ones, to the minute, in the carrier's unstated zone. So the lag is measured from
our side: from the worker handing the message to Twilio (its last attempt) to our applying the
callback. For `sent` that is mostly Twilio's own queue; for `delivered`, the carrier's."""

from __future__ import annotations

from prometheus_client import Histogram

CALLBACK_LAG = Histogram(
    "sms_callback_lag_seconds",
    "From the attempt that handed a message to Twilio to our applying a status callback, "
    "by the status it brought",
    ["status"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600),
)

"""The connection's stages and the reasons it stops reading (see protocol.py for the table)."""

IDLE, HEAD, BODY, HANDLING, CLOSING = range(5)
STAGE_NAMES = ("idle", "head", "body", "handling", "closing")

# Why reading is paused: bits, so each reason is released independently.
PIPELINE_FULL, BODY_BUFFER_FULL, WRITE_PAUSED = 1, 2, 4

BODY_BUFFER_HIGH = 256 * 1024  # unread body bytes before reading pauses
LARGE_BODY = 64 * 1024  # bodies this large are fed to the transport in slices as it drains

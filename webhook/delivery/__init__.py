"""The work around the answer: record a push (intake), handle it after the answer (handling,
background), and send its replies through the outbox within the send windows (sender, windows)."""

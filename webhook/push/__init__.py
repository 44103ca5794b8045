"""The request side of a push, pure: check its signature, open its AES envelope, read it into a
typed message, and seal the passive answer (docs/protocol.md §1-§3)."""

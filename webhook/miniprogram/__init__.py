"""The mini program's front end: login sessions, open data and phone numbers."""

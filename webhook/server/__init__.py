"""The running server: the Falcon app and its resources, the gunicorn worker that reads each
request whole, and the supervisor of ``wxpush serve``'s processes."""

"""WeChat's server API: one HTTP client, the calls bound to each app, and the access_token
shared by every process and host."""

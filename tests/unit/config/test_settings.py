"""Config loading: defaults, secrets from the environment, line-precise errors."""

from pathlib import Path

import pytest

from webhook.config.settings import config_path, load
from webhook.errors import ConfigError

KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
HASH = "scrypt$1024$8$1$c2FsdHNhbHRzYWx0c2FsdA==$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wxpush.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads():
    settings = load(Path(__file__).parents[3] / "wxpush.example.toml")
    app = settings.apps["wx0123456789abcdef"]
    assert (app.mode, app.format) == ("safe", "xml")
    assert settings.server.rules.endswith("rules.example.toml")


def test_defaults_and_relative_paths(tmp_path):
    path = write(tmp_path, f'[server]\nrules = "r.toml"\n[[apps]]\nappid = "wx1"\ntoken = "t"\n'
                           f'encoding_aes_key = "{KEY}"\n')
    settings = load(path)
    assert settings.server.store == f"sqlite:///{tmp_path}/wxpush.db"
    assert settings.server.rules == str(tmp_path / "r.toml")
    assert settings.server.timestamp_tolerance == 300 and settings.server.max_body == 65536
    assert settings.apps["wx1"].mode == "safe"
    assert settings.server.trusted_proxies == ("127.0.0.1", "::1")


def test_rate_limits_and_trusted_proxies(tmp_path):
    path = write(tmp_path, '[server]\nrate_per_client = 0.5\nburst_per_client = 3\n'
                           'rate_per_app = 10\nburst_per_app = 50\n'
                           'trusted_proxies = ["10.0.0.0/8", "fd00::1"]\n'
                           '[[apps]]\nappid = "wx1"\ntoken = "t"\nmode = "plaintext"\n')
    server = load(path).server
    assert (server.rate_per_client, server.burst_per_client) == (0.5, 3)
    assert (server.rate_per_app, server.burst_per_app) == (10, 50)
    assert server.trusted_proxies == ("10.0.0.0/8", "fd00::1")


def test_a_volatile_redis_is_allowed_only_when_said(tmp_path):
    text = '[[apps]]\nappid = "wx1"\ntoken = "t"\nmode = "plaintext"\n'
    assert load(write(tmp_path, text)).server.allow_volatile_redis is False
    allowed = load(write(tmp_path, "[server]\nallow_volatile_redis = true\n" + text))
    assert allowed.server.allow_volatile_redis is True


@pytest.mark.parametrize("fmt, mode", [("JSON", "Safe"), ("Xml", "PLAINTEXT"),
                                       ("json", "compatible")])
def test_format_and_mode_in_any_case(tmp_path, fmt, mode):
    """The console writes the data format as "JSON" and "XML"."""
    path = write(tmp_path, f'[[apps]]\nappid = "wx1"\ntoken = "t"\nencoding_aes_key = "{KEY}"\n'
                           f'format = "{fmt}"\nmode = "{mode}"\n')
    app = load(path).apps["wx1"]
    assert (app.format, app.mode) == (fmt.lower(), mode.lower())


def test_secrets_from_environment_never_in_repr(tmp_path):
    path = write(tmp_path, '[[apps]]\nappid = "wx1"\nsecret_env = "S"\ntoken_env = "T"\n'
                           'encoding_aes_key_env = "K"\nformat = "json"\n')
    app = load(path, env={"S": "sekret", "T": "tok", "K": KEY}).apps["wx1"]
    assert (app.secret, app.token, app.encoding_aes_key) == ("sekret", "tok", KEY)
    assert "sekret" not in repr(app) and KEY not in repr(app) and "tok'" not in repr(app)


def test_operations_keys(tmp_path):
    path = write(tmp_path, '[server]\nmetrics = "port:9100"\nlog_format = "json"\n'
                           'log_content = true\nready_backlog_age = 0\nready_dead_letters = 5\n'
                           '[[apps]]\nappid = "wx1"\ntoken = "t"\nmode = "plaintext"\n')
    server = load(path).server
    assert (server.metrics, server.metrics_port, server.log_format, server.log_content) == \
        ("port:9100", 9100, "json", True)
    assert (server.ready_backlog_age, server.ready_dead_letters) == (0, 5)
    defaults = load(write(tmp_path, '[[apps]]\nappid = "wx1"\ntoken = "t"\n'
                                    'mode = "plaintext"\n')).server
    assert (defaults.metrics, defaults.metrics_port, defaults.log_format) == ("on", None, "text")


@pytest.mark.parametrize("line, problem", [
    ('metrics = "9100"', 'metrics: must be "on" (GET /metrics), "off", or "port:N"'),
    ('metrics = "port:0"', 'metrics: must be "on"'),
    ('metrics = "port:65536"', 'metrics: must be "on"'),
    ('log_format = "yaml"', 'log_format: must be "text" or "json"'),
    ('log_content = "yes"', "log_content: must be true or false"),
    ('ready_dead_letters = -1', "ready_dead_letters: must be a count >= 0"),
])
def test_bad_operations_keys_name_their_line(tmp_path, line, problem):
    path = write(tmp_path, f'[server]\nstore = "sqlite:///x.db"\n{line}\n[[apps]]\n'
                           'appid = "wx1"\ntoken = "t"\nmode = "plaintext"\n')
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert f"wxpush.toml:3: {problem}" in str(raised.value)


@pytest.mark.parametrize("text, where", [
    ('[server]\ntimestamp_tolerance = -1\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":2: timestamp_tolerance: must be seconds >= 0"),
    ('[server]\nbogus = 1\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":2: bogus: unknown key"),
    ('[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n\n[[apps]]\nappid="wx2"\n'
     'token="t"\nmode="safe"\nencoding_aes_key="short"\n', ":10: encoding_aes_key: must be exactly 43"),
    ('[[apps]]\nappid="wx1"\ntoken="t"\nmode="secure"\n', ':4: mode: must be "plaintext"'),
    ('[[apps]]\nappid="wx1"\ntoken="t"\n', ":1: encoding_aes_key (or encoding_aes_key_env) is required"),
    ('[[apps]]\nappid="wx1"\ntoken_env="NOPE"\nmode="plaintext"\n', ":3: token_env: environment variable NOPE is not set"),
    ('[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":6: appid: appid 'wx1' is configured twice"),
    ('[server]\nhandle_attempts = 0\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":2: handle_attempts: must be a count between 1 and 100"),
    ('[server]\nstall_timeout = 2\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":2: stall_timeout: must be seconds between 5 and 3600"),
    ('[server]\nallow_volatile_redis = 1\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":2: allow_volatile_redis: must be true or false"),
    ('[server\n', ":1: TOML syntax error"),
    ('[server]\nstore = "sqlite:///x.db"\nrate_per_client = 0\n[[apps]]\nappid="wx1"\ntoken="t"\n'
     'mode="plaintext"\n', ":3: rate_per_client: must be requests a second, above 0"),
    ('[server]\nburst_per_app = 0.5\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":2: burst_per_app: must be a count between 1 and 1000000"),
    ('[server]\ntrusted_proxies = ["127.0.0.1",\n  "nginx.local"]\n[[apps]]\nappid="wx1"\n'
     'token="t"\nmode="plaintext"\n', ":2: trusted_proxies: must be a list of IP addresses"),
    ('[server]\ntrusted_proxies = "127.0.0.1"\n[[apps]]\nappid="wx1"\ntoken="t"\n'
     'mode="plaintext"\n', ":2: trusted_proxies: must be a list of IP addresses"),
    ('[server]\n', ": apps: at least one [[apps]] table is required"),
    ('[server]\nhistory_days = -1\n[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n',
     ":2: history_days: must be days between 0 and 365"),
    (f'[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n[[console.operators]]\nname="ana"\n'
     f'password_hash="{HASH}"\n[[console.operators]]\nname = "bo b"\npassword_hash="{HASH}"\n',
     ":9: name: name is required"),
    ('[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n[[console.operators]]\nname="ana"\n'
     'password_hash="hunter2"\n', ":7: password_hash: must be a hash printed by"),
    (f'[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n[[console.operators]]\nname="ana"\n'
     f'password_hash="{HASH}"\napps = ["wx2"]\n', ":8: apps: appid 'wx2' is not configured"),
    (f'[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n[[console.operators]]\nname="ana"\n'
     f'password_hash="{HASH}"\n[[console.operators]]\nname="ana"\npassword_hash="{HASH}"\n',
     ":9: name: operator 'ana' is named twice"),
    ('[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n[console]\nsession_ttl = 5\n',
     ":6: session_ttl: must be seconds between 60"),
    ('[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n[consoles]\n',
     ": consoles: unknown section"),
])
def test_errors_name_file_line_and_key(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert str(caught.value).startswith(str(path))
    assert where in str(caught.value)


def test_console_operators_and_history_days(tmp_path):
    path = write(tmp_path, f'[server]\nhistory_days = 0\n[[apps]]\nappid="wx1"\ntoken="t"\n'
                           f'mode="plaintext"\n[[apps]]\nappid="wx2"\ntoken="t"\n'
                           f'mode="plaintext"\n[console]\nsession_ttl = 600\n'
                           f'[[console.operators]]\nname="ana"\npassword_hash="{HASH}"\n'
                           f'[[console.operators]]\nname="李雷"\npassword_hash="{HASH}"\n'
                           f'apps=["wx2"]\n')
    settings = load(path)
    assert settings.server.history_days == 0
    console = settings.console
    assert console.session_ttl == 600 and [o.name for o in console.operators] == ["ana", "李雷"]
    assert console.operator("ana").sees("wx1") and console.operator("ana").apps is None
    assert not console.operator("李雷").sees("wx1") and console.operator("李雷").sees("wx2")
    assert console.operator("bob") is None and HASH not in repr(console)
    plain = load(write(tmp_path, '[[apps]]\nappid="wx1"\ntoken="t"\nmode="plaintext"\n'))
    assert plain.console.operators == () and plain.server.history_days == 7


def test_error_never_shows_a_secret(tmp_path):
    path = write(tmp_path, '[[apps]]\nappid="wx1"\ntoken="topsecret"\nencoding_aes_key="nothex-key-too-short"\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert "nothex-key-too-short" not in str(caught.value) and "topsecret" not in str(caught.value)


def test_config_path_precedence():
    assert config_path("a.toml", {"WXPUSH_CONFIG": "b.toml"}) == "a.toml"
    assert config_path(None, {"WXPUSH_CONFIG": "b.toml"}) == "b.toml"
    assert config_path(None, {}) == "wxpush.toml"


# -- cloud: cloud_env, files, [[apps.bridge]], [[clients]] ------------------------------------

CLOUD = f'''[[apps]]
appid = "wxA"
token = "t"
encoding_aes_key = "{KEY}"
cloud_env = "prod-4gxyz"
files = ["cloud://prod-4gxyz.7072-prod-4gxyz/public/"]

[[apps]]
appid = "wxB"
token = "t"
encoding_aes_key = "{KEY}"

[[apps.bridge]]
app = "wxA"
functions = ["users_add", "orderStatus"]

[[clients]]
name = "erp"
key_sha256 = "{"AB" * 32}"
apps = ["wxA", "wxB"]
'''


def test_cloud_settings_load(tmp_path):
    settings = load(write(tmp_path, CLOUD))
    a, b = settings.apps["wxA"], settings.apps["wxB"]
    assert (a.cloud_env, a.files, a.bridge) == (
        "prod-4gxyz", ("cloud://prod-4gxyz.7072-prod-4gxyz/public/",), ())
    assert b.cloud_env is None and b.bridge[0].app == "wxA"
    assert b.bridge[0].functions == ("users_add", "orderStatus")
    (client,) = settings.clients
    assert (client.name, client.key_sha256, client.apps) == ("erp", "ab" * 32, ("wxA", "wxB"))


def test_the_example_config_documents_the_cloud_keys():
    text = (Path(__file__).parents[3] / "wxpush.example.toml").read_text(encoding="utf-8")
    for key in ("cloud_env", "files", "[[apps.bridge]]", "functions", "[[clients]]",
                "key_sha256", "wxpush clients add"):
        assert key in text


@pytest.mark.parametrize("old, new, line, problem", [
    ('cloud_env = "prod-4gxyz"', 'cloud_env = "prod env"', 5, "cloud environment's ID"),
    ('cloud_env = "prod-4gxyz"\n', '', 5, "set cloud_env too"),
    ('"cloud://prod-4gxyz.7072-prod-4gxyz/public/"', '"cloud://prod/public"', 6, "ends with /"),
    ('"cloud://prod-4gxyz.7072-prod-4gxyz/public/"', '"https://x/"', 6, "starts with cloud://"),
    ('app = "wxA"\nfunctions', 'app = "wxC"\nfunctions', 14, "not configured"),
    ('app = "wxA"\n', '', 13, "app is required"),
    ('["users_add", "orderStatus"]', '["users add"]', 15, "cloud function names"),
    ('["users_add", "orderStatus"]', '[]', 15, "cloud function names"),
    ('functions = [', 'function = [', 15, "unknown key"),
    ('name = "erp"', 'name = "e r p"', 18, "letters, digits"),
    (f'key_sha256 = "{"AB" * 32}"', 'key_sha256 = "abc"', 19, "hex sha256"),
    (f'key_sha256 = "{"AB" * 32}"', f'key_sha256 = "{"AB" * 32}\\n"', 19, "hex sha256"),
    ('["users_add", "orderStatus"]', '["users_add\\n"]', 15, "cloud function names"),
    ('cloud_env = "prod-4gxyz"', 'cloud_env = "prod-4gxyz\\n"', 5, "cloud environment's ID"),
    ('apps = ["wxA", "wxB"]', 'apps = ["wxA", "wxZ"]', 20, "'wxZ' is not configured"),
    ('apps = ["wxA", "wxB"]', 'apps = []', 20, "non-empty list"),
])
def test_cloud_settings_errors_name_the_line(tmp_path, old, new, line, problem):
    assert old in CLOUD
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, CLOUD.replace(old, new, 1)))
    assert caught.value.line == line, str(caught.value)
    assert problem in str(caught.value)


def test_a_bridge_to_an_app_without_cloud_env_or_twice_to_one_name(tmp_path):
    with pytest.raises(ConfigError, match="no cloud_env") as caught:
        load(write(tmp_path, CLOUD.replace('app = "wxA"', 'app = "wxB"')))
    assert caught.value.line == 14
    twice = CLOUD.replace('[[clients]]', '[[apps.bridge]]\napp = "wxA"\n'
                                         'functions = ["orderStatus"]\n\n[[clients]]')
    with pytest.raises(ConfigError, match="already bridged") as caught:
        load(write(tmp_path, twice))
    assert caught.value.line == 19


def test_an_inline_bridge_and_a_second_client_with_the_same_key(tmp_path):
    inline = CLOUD.replace('[[apps.bridge]]\napp = "wxA"\nfunctions = ["users_add", "orderStatus"]',
                           'bridge = [{app = "wxZ", functions = ["f"]}]')
    with pytest.raises(ConfigError, match="'wxZ' is not configured") as caught:
        load(write(tmp_path, inline))
    assert caught.value.line == 13
    again = CLOUD + f'\n[[clients]]\nname = "crm"\nkey_sha256 = "{"ab" * 32}"\napps = ["wxA"]\n'
    with pytest.raises(ConfigError, match="another client has this key") as caught:
        load(write(tmp_path, again))
    assert caught.value.line == 24

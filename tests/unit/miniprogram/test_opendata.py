"""webhook.miniprogram.opendata: the official open-data vectors, round trips and every refusal."""

from __future__ import annotations

import base64
import json
import os

import pytest
from Crypto.Cipher import AES
from hypothesis import given, strategies as st

from webhook.errors import MalformedRequest, Retryable, Unauthorized
from webhook.miniprogram.opendata import (CLOUD_ID_EXPIRED, OpenDataError, SignatureMismatch,
                                          check_raw_signature, check_watermark,
                                          decrypt_encrypted_data, parse_open_data, phone_info)

# docs/protocol.md §7.2 / §8 O1: the official sample (demo.js of aes-sample.zip)
O1_APPID = "wx4f4bc4dec97d474b"
O1_SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ=="
O1_IV = "r7BXXKkLb8qrSNn05n0qiA=="
O1_DATA = (
    "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNP"
    "dbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyx"
    "VLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid"
    "1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEB"
    "vB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVu"
    "nYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
)
O1_PLAIN = {
    "openId": "oGZUI0egBJY1zhBYw2KhdUfwVJJE", "nickName": "Band", "gender": 1,
    "language": "zh_CN", "city": "Guangzhou", "province": "Guangdong", "country": "CN",
    "avatarUrl": "http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4Wg"
                 "MEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0",
    "unionId": "ocMvos6NjeKLIBqg5Mr9QjxrP1FA",
    "watermark": {"timestamp": 1477314187, "appid": O1_APPID},
}
# signature.html: signature = sha1(rawData + session_key)
RAW_DATA = ('{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":'
            '"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9'
            'XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}')
RAW_SESSION_KEY = "HyVFkGl5F5OQWJZZaNzBBg=="
RAW_SIGNATURE = "75e81ceda165f4ffa64f4068af58c64b8f54b88c"

APPID = "wx0123456789abcdef"
KEY = base64.b64encode(bytes(range(16))).decode()
NOW = 1_700_000_000


def seal(plain: bytes, *, key: str = KEY, pad: bytes | None = None) -> tuple[str, str]:
    """Encrypt like WeChat: AES-128-CBC with PKCS#7 over 16-byte blocks (or a forced pad)."""
    count = 16 - len(plain) % 16
    iv = os.urandom(16)
    body = plain + (pad if pad is not None else bytes([count]) * count)
    ciphertext = AES.new(base64.b64decode(key), AES.MODE_CBC, iv).encrypt(body)
    return base64.b64encode(ciphertext).decode(), base64.b64encode(iv).decode()


def user(**overrides: object) -> dict:
    data = {"openId": "o-user", "nickName": "微信用户",
            "watermark": {"appid": APPID, "timestamp": NOW}}
    data.update(overrides)
    return data


def dump(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


# -- known answers ---------------------------------------------------------------------------

def test_official_sample_decrypts() -> None:
    assert decrypt_encrypted_data(O1_DATA, O1_IV, O1_SESSION_KEY, appid=O1_APPID) == O1_PLAIN


def test_official_sample_refused_for_another_appid() -> None:
    with pytest.raises(OpenDataError, match="another appid"):
        decrypt_encrypted_data(O1_DATA, O1_IV, O1_SESSION_KEY, appid=APPID)


def test_official_sample_is_stale_today() -> None:
    with pytest.raises(OpenDataError, match="stale"):
        decrypt_encrypted_data(O1_DATA, O1_IV, O1_SESSION_KEY, appid=O1_APPID, now=NOW,
                               max_age=300)


def test_official_raw_data_signature_is_accepted_in_either_case() -> None:
    for signature in (RAW_SIGNATURE, RAW_SIGNATURE.upper()):
        assert check_raw_signature(RAW_DATA, signature, RAW_SESSION_KEY) is None   # no refusal


@pytest.mark.parametrize("raw, signature, key", [
    (RAW_DATA + " ", RAW_SIGNATURE, RAW_SESSION_KEY),
    (RAW_DATA, RAW_SIGNATURE[:-1] + "d", RAW_SESSION_KEY),
    (RAW_DATA, RAW_SIGNATURE, O1_SESSION_KEY),
    (RAW_DATA, "", RAW_SESSION_KEY),
    (RAW_DATA, "签名", RAW_SESSION_KEY),
])
def test_raw_data_signature_mismatch(raw: str, signature: str, key: str) -> None:
    with pytest.raises(SignatureMismatch) as info:
        check_raw_signature(raw, signature, key)
    assert isinstance(info.value, Unauthorized) and info.value.errcode == 87009
    assert key not in str(info.value)


def test_raw_data_signature_needs_strings() -> None:
    with pytest.raises(OpenDataError):
        check_raw_signature({"a": 1}, RAW_SIGNATURE, RAW_SESSION_KEY)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw, signature", [("\ud800", RAW_SIGNATURE), (RAW_DATA, "\udfff")])
def test_raw_data_signature_needs_valid_unicode(raw: str, signature: str) -> None:
    """Hashing half a surrogate pair raised UnicodeEncodeError."""
    with pytest.raises(OpenDataError) as info:
        check_raw_signature(raw, signature, RAW_SESSION_KEY)
    assert info.value.errcode == 40097


# -- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("extra", range(17))
def test_round_trip_every_padding_length(extra: int) -> None:
    data = user(nickName="x" * extra)
    encrypted, iv = seal(dump(data))
    assert decrypt_encrypted_data(encrypted, iv, KEY, appid=APPID, now=NOW, max_age=60) == data


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=5))
def test_round_trip_any_fields(fields: dict[str, str]) -> None:
    data = {**fields, "watermark": {"appid": APPID, "timestamp": NOW}}
    encrypted, iv = seal(dump(data))
    assert decrypt_encrypted_data(encrypted, iv, KEY, appid=APPID) == data


@given(st.integers(min_value=0, max_value=63), st.integers(min_value=1, max_value=255))
def test_tampering_never_escapes_as_another_error(position: int, flip: int) -> None:
    encrypted, iv = seal(dump(user()))
    raw = bytearray(base64.b64decode(encrypted))
    raw[position % len(raw)] ^= flip
    try:
        data = decrypt_encrypted_data(base64.b64encode(raw).decode(), iv, KEY, appid=APPID)
    except OpenDataError as refused:   # what the front end gets: a 400 with WeChat's errcode
        assert (refused.status, refused.errcode) == (400, -41003)
    else:   # a flip in a JSON string value may still decrypt to data, still the app's
        assert data["watermark"]["appid"] == APPID


# -- refusals --------------------------------------------------------------------------------

def refused(encrypted: str, iv: str, key: str = KEY, **kwargs: object) -> OpenDataError:
    with pytest.raises(OpenDataError) as info:
        decrypt_encrypted_data(encrypted, iv, key, appid=APPID, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, MalformedRequest) and info.value.status == 400
    return info.value


def test_malformed_base64() -> None:
    encrypted, iv = seal(dump(user()))
    assert refused(encrypted[:-3] + "!!=", iv).errcode == -41004
    assert refused(encrypted, "not base64?").errcode == -41004
    assert refused("", iv).errcode == -41004
    assert refused(None, iv).errcode == -41004  # type: ignore[arg-type]


def test_wrong_iv_length() -> None:
    encrypted, _ = seal(dump(user()))
    assert refused(encrypted, base64.b64encode(bytes(15)).decode()).errcode == -41002
    assert refused(encrypted, base64.b64encode(bytes(32)).decode()).errcode == -41002


def test_unusable_session_key() -> None:
    encrypted, iv = seal(dump(user()))
    bad_key = base64.b64encode(bytes(24)).decode()
    error = refused(encrypted, iv, key=bad_key)
    assert error.errcode == -41001 and bad_key not in str(error)


def test_not_whole_blocks() -> None:
    encrypted, iv = seal(dump(user()))
    short = base64.b64encode(base64.b64decode(encrypted)[:-1]).decode()
    assert "16-byte blocks" in refused(short, iv).reason


@pytest.mark.parametrize("pad", [b"\x00" * 16, b"\x11" * 16, b"\x03\x02\x03", b"\x01\x02"])
def test_bad_padding_reads_like_a_wrong_key(pad: bytes) -> None:
    plain = dump(user())
    plain += b" " * (-(len(plain) + len(pad)) % 16)
    encrypted, iv = seal(plain, pad=pad)
    bad_padding = refused(encrypted, iv).reason
    other_key = base64.b64encode(os.urandom(16)).decode()
    # bad padding, another key and a non-JSON plaintext answer alike: no padding oracle
    assert bad_padding == refused(*seal(dump(user()), key=other_key)).reason
    assert bad_padding == refused(*seal(b"\xff\xfe not json")).reason


def test_a_lone_surrogate_in_the_plaintext_reads_like_a_wrong_key() -> None:
    encrypted, iv = seal(b'{"nickName": "\\ud800", "watermark": {"appid": "%s", "timestamp": %d}}'
                         % (APPID.encode(), NOW))
    assert "does not open" in refused(encrypted, iv).reason


def test_an_open_data_json_string_holding_a_lone_surrogate_is_not_json() -> None:
    """(An item that is an object was decoded with the whole answer, and checked there.)"""
    with pytest.raises(Retryable):
        parse_open_data([{"cloud_id": "c", "json": '{"data": {"x": "\\udc00"}}'}], appid=APPID)


def test_plaintext_must_be_an_object() -> None:
    assert "JSON object" in refused(*seal(b"[1, 2]")).reason


def test_watermark_for_another_appid() -> None:
    data = user(watermark={"appid": "wxffffffffffffffff", "timestamp": NOW})
    assert "another appid" in refused(*seal(dump(data))).reason


@pytest.mark.parametrize("mark", [None, "wx0123456789abcdef", {}, {"timestamp": NOW}])
def test_watermark_missing(mark: object) -> None:
    data = user(watermark=mark)
    assert "watermark" in refused(*seal(dump(data))).reason


@pytest.mark.parametrize("age, ok", [(0, True), (300, True), (301, False), (-301, False)])
def test_max_age(age: int, ok: bool) -> None:
    data = user(watermark={"appid": APPID, "timestamp": NOW - age})
    encrypted, iv = seal(dump(data))
    if ok:
        assert decrypt_encrypted_data(encrypted, iv, KEY, appid=APPID, now=NOW, max_age=300)
    else:
        assert "stale" in refused(encrypted, iv, now=NOW, max_age=300).reason


def test_max_age_zero_is_off_and_needs_a_timestamp_when_on() -> None:
    check_watermark({"watermark": {"appid": APPID}}, appid=APPID, now=NOW, max_age=0)
    with pytest.raises(OpenDataError, match="timestamp"):
        check_watermark({"watermark": {"appid": APPID, "timestamp": "1"}}, appid=APPID,
                        now=NOW, max_age=60)


# -- getopendata -----------------------------------------------------------------------------

def cloud_item(cloud_id: str, data: dict, *, as_string: bool) -> dict:
    decoded = {"cloudID": cloud_id, "data": data}
    return {"cloud_id": cloud_id, "json": json.dumps(decoded) if as_string else decoded}


@pytest.mark.parametrize("as_string", [True, False])
def test_open_data_json_string_or_object(as_string: bool) -> None:
    werun = {"stepInfoList": [{"timestamp": NOW, "step": 100}],
             "watermark": {"appid": APPID, "timestamp": NOW}}
    items = [cloud_item("c1", werun, as_string=as_string), cloud_item("c2", user(),
                                                                        as_string=as_string)]
    assert parse_open_data(items, appid=APPID, now=NOW, max_age=60) == [
        {"cloudID": "c1", "data": werun}, {"cloudID": "c2", "data": user()}]


def test_open_data_expired_cloud_id() -> None:
    expired = {"cloud_id": "c1", "json": json.dumps(
        {"cloudID": "c1", "errCode": CLOUD_ID_EXPIRED, "errMsg": "cloudID expired."})}
    with pytest.raises(OpenDataError, match="expired") as info:
        parse_open_data([cloud_item("c0", user(), as_string=True), expired], appid=APPID)
    assert info.value.errcode == -601006 and info.value.status == 400


def test_open_data_watermark_checked() -> None:
    other = user(watermark={"appid": "wxother", "timestamp": NOW})
    with pytest.raises(OpenDataError, match="another appid"):
        parse_open_data([cloud_item("c1", other, as_string=True)], appid=APPID)
    with pytest.raises(OpenDataError, match="no data"):
        parse_open_data([{"cloud_id": "c1", "json": '{"cloudID": "c1"}'}], appid=APPID)


@pytest.mark.parametrize("data_list", [None, "x", [{"cloud_id": "c"}], [{"json": "{bad"}], [7]])
def test_open_data_garbage_from_wechat_is_retryable(data_list: object) -> None:
    with pytest.raises(Retryable):
        parse_open_data(data_list, appid=APPID)  # type: ignore[arg-type]


# -- phone number ----------------------------------------------------------------------------

@pytest.mark.parametrize("country", [86, "86"])
def test_phone_info_shaped(country: object) -> None:
    info = {"phoneNumber": "+86 13800138000", "purePhoneNumber": "13800138000",
            "countryCode": country, "watermark": {"timestamp": NOW, "appid": APPID}}
    assert phone_info(info, appid=APPID, now=NOW + 10, max_age=60) == {
        "phoneNumber": "+86 13800138000", "purePhoneNumber": "13800138000",
        "countryCode": "86", "watermark": {"timestamp": NOW, "appid": APPID}}


def test_phone_info_refusals() -> None:
    mark = {"timestamp": NOW, "appid": "wxother"}
    with pytest.raises(OpenDataError, match="another appid"):
        phone_info({"phoneNumber": "1", "watermark": mark}, appid=APPID)
    with pytest.raises(OpenDataError, match="stale"):
        phone_info({"phoneNumber": "1", "watermark": {"timestamp": NOW, "appid": APPID}},
                   appid=APPID, now=NOW + 61, max_age=60)
    with pytest.raises(Retryable):
        phone_info({"errcode": 0}, appid=APPID)

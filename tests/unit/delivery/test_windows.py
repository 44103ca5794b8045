"""The customer-service send windows (docs/protocol.md §4.2)."""

from webhook.delivery.windows import SAME_SECOND_KEYS, note_enter, note_message, take, verdict

H = 3600


def test_nothing_recorded_lets_wechat_decide():
    assert verdict(None, 1000) is None
    assert take(None, 1000) is None                 # a send tells nothing of the windows


def test_no_window_once_it_closed():
    assert "45015" in verdict(note_enter(None, 1000), 1060)
    assert "45015" in verdict(note_message(None, 1000, "msg:1"), 1000 + 48 * H)


def test_five_messages_within_48_hours_of_a_user_message():
    state = note_message(None, 1000, "msg:1")
    for _ in range(5):
        assert verdict(state, 2000) is None
        state = take(state, 2000)
    assert "45047" in verdict(state, 2000)


def test_a_new_user_message_opens_a_fresh_window():
    state = note_message(None, 1000, "msg:1")
    for _ in range(5):
        state = take(state, 1001)
    state = note_message(state, 1500, "msg:2")
    assert verdict(state, 1501) is None
    assert note_message(state, 1200, "msg:0") == state      # an older message changes nothing


def test_every_message_of_the_same_second_opens_a_fresh_window():
    state = note_message(None, 1000, "msg:1")
    for n in range(2, 10):                  # each message answered before the next arrives
        for _ in range(5):
            state = take(state, 1000)
        assert "45047" in verdict(state, 1000)
        state = note_message(state, 1000, f"msg:{n}")
        assert verdict(state, 1000) is None


def test_a_message_noted_twice_reopens_the_window_once():
    state = note_message(None, 1000, "msg:1")
    state = note_message(take(state, 1000), 1000, "msg:2")
    used = take(take(take(take(take(state, 1000), 1000), 1000), 1000), 1000)
    assert note_message(used, 1000, "msg:2") == used     # its handling run again
    assert note_message(used, 1000, "msg:1") == used
    assert "45047" in verdict(used, 1000)


def test_same_second_keys_are_bounded():
    state = None
    for n in range(3 * SAME_SECOND_KEYS):
        state = note_message(state, 1000, f"msg:{n}")
    assert len(state) < 40 * SAME_SECOND_KEYS


def test_two_messages_within_a_minute_of_entering():
    state = note_enter(None, 1000)
    state = take(take(state, 1010), 1020)
    assert "45047" in verdict(state, 1030)


def test_both_windows_add_up():
    state = note_enter(note_message(None, 1000, "msg:1"), 1000)
    for _ in range(7):
        assert verdict(state, 1010) is None
        state = take(state, 1010)
    assert "45047" in verdict(state, 1010)


def test_a_send_counts_against_the_window_closing_first():
    """As the emulator counts: the minute after entering is used before the 48 hours."""
    state = note_message(note_enter(None, 1000), 1001, "msg:1")
    state = take(take(state, 1010), 1010)           # both from the enter window
    for _ in range(5):                              # the minute is over: 5 left of 48 h
        assert verdict(state, 1100) is None
        state = take(state, 1100)
    assert "45047" in verdict(state, 1100)


def test_state_written_before_message_keys_were_kept_still_loads():
    old = '{"msg_at":1000.0,"msg_sent":5,"enter_at":0.0,"enter_sent":0}'
    assert "45047" in verdict(old, 1001)
    assert verdict(note_message(old, 1000, "msg:2"), 1001) is None

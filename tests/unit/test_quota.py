"""The customer-service send windows (docs/protocol.md §4.2)."""

from webhook.quota import note_enter, note_message, take, verdict

H = 3600


def test_no_window_without_a_push():
    assert "45015" in verdict(None, 1000)


def test_five_messages_within_48_hours_of_a_user_message():
    state = note_message(None, 1000)
    for _ in range(5):
        assert verdict(state, 2000) is None
        state = take(state, 2000)
    assert "45047" in verdict(state, 2000)
    assert "45015" in verdict(note_message(None, 1000), 1000 + 48 * H)


def test_a_new_user_message_opens_a_fresh_window():
    state = note_message(None, 1000)
    for _ in range(5):
        state = take(state, 1001)
    state = note_message(state, 1500)
    assert verdict(state, 1501) is None
    assert note_message(state, 1200) == state      # an older (retried) push changes nothing


def test_two_messages_within_a_minute_of_entering():
    state = note_enter(None, 1000)
    state = take(take(state, 1010), 1020)
    assert "45047" in verdict(state, 1030)
    assert "45015" in verdict(note_enter(None, 1000), 1060)


def test_both_windows_add_up():
    state = note_enter(note_message(None, 1000), 1000)
    for _ in range(7):
        assert verdict(state, 1010) is None
        state = take(state, 1010)
    assert verdict(state, 1010) is not None

"""Unit tests for the simulator's settings: defaults, every variable, and all problems reported at once."""

import pytest

from simulator.faults import Dice, Faults, parse_faults
from simulator.settings import Autopay, ConfigError, SimulatorSettings

KEY = "6698851A525C9433"
NEW_KEY = "A8B5FE540E38A5A9"
MERCHANTS = f"QC00005496={KEY},QC00005496={NEW_KEY},ON00004652=0123456789ABCDEF"


def test_from_env_only_merchants_gives_documented_defaults() -> None:
    settings = SimulatorSettings.from_env({"OTTPAY_MERCHANTS": MERCHANTS})
    assert settings.merchants["QC00005496"] == (KEY, NEW_KEY)
    assert (settings.host, settings.port, settings.seed, settings.timeout_hold_s) == ("127.0.0.1", 8090, 0, 30.0)
    assert settings.faults == Faults()
    assert settings.autopay is None
    assert settings.callback_retry_s == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert (settings.decline_suffix, settings.wrong_pin_suffix) == ("0000", "9999")
    assert settings.operators == {}


def test_from_env_every_variable_is_read() -> None:
    settings = SimulatorSettings.from_env(
        {
            "OTTPAY_MERCHANTS": MERCHANTS,
            "OTTPAY_OPERATORS": "QC00005496=1234567890, ON00004652=0987654321",
            "SIM_HOST": "0.0.0.0",
            "SIM_PORT": "9100",
            "SIM_SEED": "42",
            "SIM_FAULTS": "latency_ms=20, timeout=0.1,error_5xx=0.2,processing=0.3,processing_delay_s=1.5,"
            "drop_callback=0.4,duplicate_callback=0.5,reorder_callback=0.6,reorder_delay_s=3,amount_mismatch=1",
            "SIM_TIMEOUT_HOLD_S": "2.5",
            "SIM_AUTOPAY": "fraction=0.8,delay_s=2",
            "SIM_CALLBACK_RETRY_S": "0.5, 1",
            "SIM_DECLINE_SUFFIX": "1111",
            "SIM_WRONG_PIN_SUFFIX": "2222",
        }
    )
    assert settings.operators == {"QC00005496": "1234567890", "ON00004652": "0987654321"}
    assert (settings.host, settings.port, settings.seed, settings.timeout_hold_s) == ("0.0.0.0", 9100, 42, 2.5)
    assert settings.faults == Faults(20, 0.1, 0.2, 0.3, 1.5, 0.4, 0.5, 0.6, 3.0, 1.0)
    assert settings.autopay == Autopay(fraction=0.8, delay_s=2.0)
    assert settings.callback_retry_s == (0.5, 1.0)
    assert (settings.decline_suffix, settings.wrong_pin_suffix) == ("1111", "2222")


def test_from_env_retry_none_disables_resends() -> None:
    settings = SimulatorSettings.from_env({"OTTPAY_MERCHANTS": MERCHANTS, "SIM_CALLBACK_RETRY_S": "none"})
    assert settings.callback_retry_s == ()


def test_from_env_many_problems_are_reported_together() -> None:
    env = {
        "OTTPAY_MERCHANTS": f"QC00005496={KEY},BROKEN",
        "OTTPAY_OPERATORS": "NOBODY=1",
        "SIM_PORT": "70000",
        "SIM_SEED": "-1",
        "SIM_FAULTS": "timeout=1.5,latency_ms=fast,explode=1,timeout=0",
        "SIM_TIMEOUT_HOLD_S": "nan",
        "SIM_AUTOPAY": "fraction=2",
        "SIM_CALLBACK_RETRY_S": "1,-2",
        "SIM_DECLINE_SUFFIX": "00-00",
        "SIM_WRONG_PIN_SUFFIX": "99 99",
    }
    with pytest.raises(ConfigError) as raised:
        SimulatorSettings.from_env(env)
    message = str(raised.value)
    for needle in ("OTTPAY_MERCHANTS", "SIM_PORT", "SIM_SEED", "timeout must be 0..1", "latency_ms", "explode"):
        assert needle in message
    for needle in ("timeout is given twice", "SIM_TIMEOUT_HOLD_S", "SIM_AUTOPAY", "SIM_CALLBACK_RETRY_S"):
        assert needle in message
    assert "SIM_DECLINE_SUFFIX" in message and "SIM_WRONG_PIN_SUFFIX" in message
    assert KEY not in message


def test_from_env_missing_merchants_is_reported_with_other_problems() -> None:
    with pytest.raises(ConfigError) as raised:
        SimulatorSettings.from_env({"SIM_PORT": "x"})
    assert "OTTPAY_MERCHANTS is not set" in str(raised.value) and "SIM_PORT" in str(raised.value)


def test_from_env_bad_key_is_never_echoed() -> None:
    secret = "SECRETKEY-WITH-DASH"
    with pytest.raises(ConfigError) as raised:
        SimulatorSettings.from_env({"OTTPAY_MERCHANTS": f"QC00005496={secret}"})
    assert secret not in str(raised.value) and "QC00005496" in str(raised.value)


def test_from_env_operator_for_unknown_merchant_is_a_problem() -> None:
    with pytest.raises(ConfigError, match="NOBODY is not in OTTPAY_MERCHANTS"):
        SimulatorSettings.from_env({"OTTPAY_MERCHANTS": MERCHANTS, "OTTPAY_OPERATORS": "NOBODY=1234567890"})


def test_from_env_overlapping_suffixes_are_a_problem() -> None:
    with pytest.raises(ConfigError, match="suffixes of each other"):
        SimulatorSettings.from_env({"OTTPAY_MERCHANTS": MERCHANTS, "SIM_WRONG_PIN_SUFFIX": "00"})


def test_settings_repr_hides_keys() -> None:
    settings = SimulatorSettings.from_env({"OTTPAY_MERCHANTS": MERCHANTS})
    assert KEY not in repr(settings) and NEW_KEY not in repr(settings)


def test_parse_faults_empty_text_is_no_faults() -> None:
    assert parse_faults(" , ") == (Faults(), [])


@pytest.mark.parametrize("text", ["processing=inf", "drop_callback=-0.1", "latency_ms=1.5", "reorder_delay_s=-1"])
def test_parse_faults_out_of_range_value_is_a_problem(text: str) -> None:
    faults, problems = parse_faults(text)
    assert faults == Faults() and len(problems) == 1


def test_dice_same_seed_gives_same_draws_and_reseed_restarts() -> None:
    first, second = Dice(5), Dice(5)
    draws = [first.chance(0.5) for _ in range(20)]
    assert draws == [second.chance(0.5) for _ in range(20)]
    first.reseed()
    assert draws == [first.chance(0.5) for _ in range(20)]


def test_dice_certain_probabilities_take_no_draw() -> None:
    dice, reference = Dice(3), Dice(3)
    assert dice.chance(1.0) and not dice.chance(0.0)
    assert dice.fraction() == reference.fraction()

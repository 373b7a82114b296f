"""File-name parsers: course train names, anonymous names, official Market names (junk, distractors)."""
import pytest
from hypothesis import given, strategies as st

from reid_utils.data.parsing import (
    DISTRACTOR_PID,
    JUNK_PID,
    MarketName,
    format_course_train_name,
    format_market_name,
    is_distractor,
    is_image_file,
    is_junk,
    is_labelled,
    parse_anonymous_name,
    parse_course_train_name,
    parse_market_name,
)
from reid_utils.errors import DataError


def test_course_train_name():
    assert parse_course_train_name("0006_c1_004629837.jpg") == (6, 0)
    assert parse_course_train_name("train/1501_c6_000000001.jpg") == (1501, 5)


def test_anonymous_name():
    assert parse_anonymous_name("000000.jpg") == 0
    assert parse_anonymous_name("queries/002247.jpg") == 2247


def test_market_name():
    assert parse_market_name("0002_c1s1_000451_03.jpg") == MarketName(pid=2, camid=0, sequence=1, frame=451, box=3)
    assert parse_market_name("bounding_box_test/1501_c6s4_001877_02.jpg").camid == 5


def test_market_junk_and_distractor():
    junk = parse_market_name("-1_c1s1_000401_03.jpg")
    distractor = parse_market_name("0000_c2s1_000151_01.jpg")
    assert junk.pid == JUNK_PID == -1 and junk.camid == 0
    assert distractor.pid == DISTRACTOR_PID == 0 and distractor.camid == 1
    assert is_junk(junk.pid) and not is_labelled(junk.pid)
    assert is_distractor(distractor.pid) and not is_labelled(distractor.pid)
    assert is_labelled(2) and not is_junk(2) and not is_distractor(2)


@pytest.mark.parametrize(
    "parser, name",
    [
        (parse_course_train_name, "6_c1.jpg"),
        (parse_course_train_name, "0006_c1_004629837.txt"),
        (parse_course_train_name, "000123.jpg"),
        (parse_course_train_name, "0006_c0_004629837.jpg"),  # cameras are c1-c6
        (parse_course_train_name, "0006_c7_004629837.jpg"),
        (parse_anonymous_name, "0006_c1_004629837.jpg"),
        (parse_anonymous_name, "img.jpg"),
        (parse_market_name, "0006_c1_004629837.jpg"),
        (parse_market_name, "-2_c1s1_000401_03.jpg"),
        (parse_market_name, "02_c1s1_000451_03.jpg"),
        (parse_market_name, "0002_c9s1_000451_03.jpg"),
    ],
)
def test_bad_names_raise_naming_the_file(parser, name):
    with pytest.raises(DataError, match="expected") as error:
        parser(f"some/folder/{name}")
    assert f"some/folder/{name}" in str(error.value)


def test_is_image_file():
    assert is_image_file("a/0006_c1_004629837.jpg")
    assert is_image_file("000001.JPG") and is_image_file("x.jpeg") and is_image_file("x.png")
    for name in ("desktop.ini", "Thumbs.db", ".DS_Store", "._000001.jpg", "notes.txt", "train"):
        assert not is_image_file(name), name


pids = st.integers(1, 9999)
cams = st.integers(0, 5)


@given(pid=pids, camid=cams, number=st.integers(0, 999_999_999))
def test_course_name_round_trip(pid, camid, number):
    assert parse_course_train_name(format_course_train_name(pid, camid, number)) == (pid, camid)


@given(
    pid=st.one_of(pids, st.just(JUNK_PID), st.just(DISTRACTOR_PID)),
    camid=cams,
    sequence=st.integers(1, 9),
    frame=st.integers(0, 999_999),
    box=st.integers(0, 99),
)
def test_market_name_round_trip(pid, camid, sequence, frame, box):
    name = format_market_name(pid, camid, sequence, frame, box)
    assert parse_market_name(name) == MarketName(pid, camid, sequence, frame, box)


@given(number=st.integers(0, 10**8))
def test_anonymous_name_round_trip(number):
    assert parse_anonymous_name(f"{number:06d}.jpg") == number


@given(name=st.text(max_size=40))
def test_parsers_raise_only_data_error(name):
    """Any string either parses or raises DataError (never another exception)."""
    for parser in (parse_course_train_name, parse_anonymous_name, parse_market_name):
        try:
            parser(name)
        except DataError as error:
            assert "expected" in str(error)

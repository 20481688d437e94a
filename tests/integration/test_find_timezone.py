"""Timezone query adjustment (C-FIND extended negotiation byte 3, PS3.4
C.2.2.2; issue 22 point 3). Negotiated, a query that gives Timezone Offset
From UTC (0008,0201) has its date / time keys read in that zone: each
study's stored local values (in its own offset when an instance carried one,
else in the node's `[query] timezone`) are compared, and answered, as that
zone sees them, and every response carries the query's offset. Without the
negotiation the offset changes nothing."""

import os

import pytest

import findscu_util as F
import pacsnode_harness as H
from pacsnode_harness import gen_corpus


def uid(*parts):
    return gen_corpus.make_uid(0, "timezone", *parts)


# (study, StudyDate, StudyTime, TimezoneOffsetFromUTC); the node's zone is
# -0500. Seen from +0200: a1 2024-01-11 00:30, a2 (node zone) 2024-01-11
# 06:30, a3 2024-01-10 (a date alone stays), a4 2024-01-11 03:00; from
# -0300: a1 2024-01-10 19:30, a2 2024-01-11 01:30, a4 2024-01-10 22:00.
STUDIES = [("a1", "20240110", "233000", "+0100"), ("a2", "20240110", "233000", None),
           ("a3", "20240110", None, "+0100"), ("a4", "20240111", "010000", "+0000")]
TZ_ONLY = bytes([0, 0, 0, 1])


def store(node, scu_dir, rows, pid):
    files = []
    for st, date, time_, tz in rows:
        attrs = {"StudyDate": date, "NameOfPhysiciansReadingStudy": "Reader^" + st}
        if time_ is not None:
            attrs["StudyTime"] = time_
        if tz is not None:
            attrs["TimezoneOffsetFromUTC"] = tz
        e = gen_corpus.make_instance(os.path.join(str(scu_dir), st + ".dcm"), name=st, patient_id=pid,
                                     study_uid=uid(st), series_uid=uid(st, "se"), sop_uid=uid(st, "i"),
                                     set_attrs=attrs, delete=[] if time_ is not None else ["StudyTime"])
        files.append(e["path"])
    run = H.storescu(node.port, files, str(scu_dir))
    assert run.all_success(), run.summary()


@pytest.fixture
def tnode(node_factory, scu_dir):
    node = node_factory(extra_config={"query": {"timezone": "-0500"}})
    store(node, scu_dir, STUDIES, "PT-A")
    return node


def query(level="STUDY", **keys):
    return F.query_dataset(level, keys)


def open_assoc(node, model, offer):
    return F.open_extneg(node.port, "PNTZ", model, offer)


def studies(res):
    assert res.final_status == 0x0000, res.final_status
    return sorted(str(r.dataset.StudyInstanceUID) for r in res.pending)


def u(*names):
    return sorted(uid(n) for n in names)


def find(a, model=F.STUDY_ROOT, level="STUDY", **keys):
    keys.setdefault("PatientID", "PT-A")
    keys.setdefault("StudyInstanceUID", "")
    return a.c_find(model, query(level, **keys))


@pytest.mark.parametrize("model", [F.STUDY_ROOT, F.PATIENT_ROOT])
def test_byte_3_accepted(tnode, model):
    """Answered 1 when offered, with the other fields as before; a study at
    23:30 +0100 is found on the next day from +0200, not on its own."""
    a = open_assoc(tnode, model, bytes([0, 0, 0, 1, 0, 0, 0]))
    try:
        assert a.ext_neg == {model: bytes([0, 0, 0, 1, 0, 0, 0])}, a.ext_neg
        keys = dict(TimezoneOffsetFromUTC="+0200")
        assert studies(find(a, model, StudyDate="20240111", StudyTime="0000-0100", **keys)) == u("a1")
        assert studies(find(a, model, StudyDate="20240110", **keys)) == u("a3")
        a.release()
    finally:
        a.close()


def test_matching_in_the_query_zone(tnode):
    a = open_assoc(tnode, F.STUDY_ROOT, TZ_ONLY)
    try:
        assert a.ext_neg == {F.STUDY_ROOT: TZ_ONLY}, a.ext_neg
        plus2 = dict(TimezoneOffsetFromUTC="+0200")
        minus3 = dict(TimezoneOffsetFromUTC="-0300")
        # a date and a time, each in the query's zone
        assert studies(find(a, StudyDate="20240111", StudyTime="0000-0100", **plus2)) == u("a1")
        # the study without an offset is in the node's zone (-0500)
        assert studies(find(a, StudyDate="20240111", StudyTime="0600-0700", **plus2)) == u("a2")
        # a date alone: the days of the query's zone, across midnight both ways
        assert studies(find(a, StudyDate="20240110", **plus2)) == u("a3")
        assert studies(find(a, StudyDate="20240111", **plus2)) == u("a1", "a2", "a4")
        assert studies(find(a, StudyDate="20240110", **minus3)) == u("a1", "a3", "a4")
        assert studies(find(a, StudyDate="20240111-", **minus3)) == u("a2")
        assert studies(find(a, StudyDate="-20240109", **minus3)) == []
        # a time alone wraps at midnight
        assert studies(find(a, StudyTime="0000-0100", **plus2)) == u("a1")
        assert studies(find(a, StudyTime="2200-2300", **minus3)) == u("a4")
        assert studies(find(a, StudyTime="0130", **minus3)) == u("a2")
        # no offset in the identifier: as stored
        assert studies(find(a, StudyTime="0000-0100")) == u("a4")
        a.release()
    finally:
        a.close()


def test_responses_in_the_query_zone(tnode):
    """StudyDate / StudyTime as the query's zone sees them (a date without a
    time as stored) and Timezone Offset From UTC the query's, the direct
    way and the general one (a key matched on the stored attributes)."""
    want = {uid("a1"): ("20240111", "003000"), uid("a2"): ("20240111", "063000"),
            uid("a3"): ("20240110", ""), uid("a4"): ("20240111", "030000")}
    a = open_assoc(tnode, F.STUDY_ROOT, TZ_ONLY)
    try:
        for extra in ({}, {"NameOfPhysiciansReadingStudy": "Reader*"}):
            res = find(a, StudyDate="", StudyTime="", TimezoneOffsetFromUTC="+0200", **extra)
            assert res.final_status == 0x0000
            got = {str(r.dataset.StudyInstanceUID): (str(r.dataset.StudyDate), str(r.dataset.StudyTime))
                   for r in res.pending}
            assert got == want, extra
            assert {str(r.dataset.TimezoneOffsetFromUTC) for r in res.pending} == {"+0200"}
        # a series' date and time too (stored 20240101 120100 at +0100)
        res = find(a, level="SERIES", StudyInstanceUID=uid("a1"), SeriesInstanceUID="", SeriesDate="",
                   SeriesTime="", TimezoneOffsetFromUTC="-1000")
        assert res.final_status == 0x0000
        (r,) = res.pending
        assert (str(r.dataset.SeriesDate), str(r.dataset.SeriesTime)) == ("20240101", "010100")
        assert str(r.dataset.TimezoneOffsetFromUTC) == "-1000"
        a.release()
    finally:
        a.close()


def test_combined_with_date_time_matching(tnode):
    """Both negotiated: the date and the time one range in the query's
    zone (2024-01-10 00:00 to 2024-01-11 01:00 at +0200: a1, and a3 from
    its midnight); the timezone alone: each on its own (a1)."""
    keys = dict(StudyDate="20240110-20240111", StudyTime="0000-0100", TimezoneOffsetFromUTC="+0200")
    a = open_assoc(tnode, F.STUDY_ROOT, bytes([0, 1, 0, 1]))
    try:
        assert a.ext_neg == {F.STUDY_ROOT: bytes([0, 1, 0, 1])}, a.ext_neg
        assert studies(find(a, **keys)) == u("a1", "a3")
        a.release()
    finally:
        a.close()
    a = open_assoc(tnode, F.STUDY_ROOT, TZ_ONLY)
    try:
        assert studies(find(a, **keys)) == u("a1")
        a.release()
    finally:
        a.close()


def test_without_the_negotiation_the_offset_changes_nothing(tnode):
    a = open_assoc(tnode, F.STUDY_ROOT, None)
    try:
        assert a.ext_neg == {}
        keys = dict(TimezoneOffsetFromUTC="+0200")
        assert studies(find(a, StudyDate="20240111", StudyTime="0000-0100", **keys)) == u("a4")
        assert studies(find(a, StudyDate="20240110", **keys)) == u("a1", "a2", "a3")
        res = find(a, StudyDate="", StudyTime="", **keys)
        got = {str(r.dataset.StudyInstanceUID): (str(r.dataset.StudyDate), str(r.dataset.StudyTime))
               for r in res.pending}
        assert got[uid("a1")] == ("20240110", "233000")
        # not an offset: no error either, as before
        assert studies(find(a, StudyDate="20240110", TimezoneOffsetFromUTC="+2500")) == u("a1", "a2", "a3")
        a.release()
    finally:
        a.close()


def test_an_offset_that_is_not_one_is_refused(tnode):
    a = open_assoc(tnode, F.STUDY_ROOT, TZ_ONLY)
    try:
        for bad in ("+2500", "0100", "+01:00"):
            res = find(a, StudyDate="20240110", TimezoneOffsetFromUTC=bad)
            assert res.final_status == 0xC000, (bad, res.final_status)
            assert not res.pending
            assert "Timezone Offset From UTC" in res.final.error_comment
        # the association goes on
        assert studies(find(a, StudyDate="20240110", TimezoneOffsetFromUTC="+0100")) == u("a1", "a3")
        a.release()
    finally:
        a.close()
    assert "is not +HHMM or -HHMM" in tnode.log_text()


@pytest.fixture
def bnode(node_factory, scu_dir):
    """Two studies at 23:30 without an offset, under Europe/Berlin: b1 in
    summer (CEST, +0200: 21:30 UTC), b2 in winter (CET, +0100: 22:30 UTC)."""
    node = node_factory(extra_config={"query": {"timezone": "Europe/Berlin"}})
    store(node, scu_dir, [("b1", "20240715", "233000", None), ("b2", "20240115", "233000", None)], "PT-B")
    return node


def test_named_zone_with_daylight_saving_time(bnode):
    a = open_assoc(bnode, F.STUDY_ROOT, TZ_ONLY)
    try:
        utc = dict(PatientID="PT-B", TimezoneOffsetFromUTC="+0000")
        assert studies(find(a, StudyTime="2100-2200", **utc)) == u("b1")
        assert studies(find(a, StudyTime="2200-2300", **utc)) == u("b2")
        res = find(a, StudyDate="", StudyTime="", **utc)
        got = {str(r.dataset.StudyInstanceUID): (str(r.dataset.StudyDate), str(r.dataset.StudyTime))
               for r in res.pending}
        assert got == {uid("b1"): ("20240715", "213000"), uid("b2"): ("20240115", "223000")}
        # from +0100 the winter study is where it was stored, the summer one an hour earlier
        res = find(a, StudyDate="", StudyTime="", PatientID="PT-B", TimezoneOffsetFromUTC="+0100")
        got = {str(r.dataset.StudyInstanceUID): str(r.dataset.StudyTime) for r in res.pending}
        assert got == {uid("b1"): "223000", uid("b2"): "233000"}
        a.release()
    finally:
        a.close()

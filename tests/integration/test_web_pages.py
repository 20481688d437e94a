"""The study browser (issue 20, docs/web.md), in a real browser: Debian's
chromium headless loads the pages (--dump-dom gives the DOM after the
script ran; --screenshot a picture). The index lists the corpus' studies
newest first with their patients; a search by a non-Latin name and by a
date range finds what the manifest's model says C-FIND finds; a study page
has one section per series with the right attributes and a thumbnail that
decodes; a patient page keeps patients apart by issuer; text from the data
is escaped; pages are paginated."""

import os
import re
import shutil
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest

import findscu_util as F
import pacsnode_harness as H
import web_util as W
from pacsnode_harness import gen_corpus
from web_util import wnode  # noqa: F401 (a fixture)

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def browser(url, *, screenshot=None, timeout=60):
    """The DOM chromium builds for `url` (its scripts run)."""
    profile = tempfile.mkdtemp(prefix="pn-chromium-")
    try:
        argv = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--user-data-dir=" + profile, "--window-size=1280,2000"]
        argv += ["--screenshot=" + screenshot] if screenshot else ["--dump-dom"]
        r = subprocess.run(argv + [url], capture_output=True, timeout=timeout)
        assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
        return r.stdout.decode("utf-8")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Dom(HTMLParser):
    """Just enough of the DOM: elements with their attributes, classes and
    text, nested."""

    class Node:
        def __init__(self, tag, attrs, parent):
            self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], ""

        def all(self, tag=None, cls=None):
            for c in self.children:
                if (tag is None or c.tag == tag) and (cls is None or cls in c.attrs.get("class", "").split()):
                    yield c
                yield from c.all(tag, cls)

        def full_text(self):
            return self.text + "".join(c.full_text() for c in self.children)

    VOID = {"meta", "link", "img", "input", "br", "hr"}

    def __init__(self, html):
        super().__init__()
        self.root = self.cur = Dom.Node("#root", {}, None)
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        n = Dom.Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.text += data


def url(node, path, **params):
    return "http://127.0.0.1:%d%s%s" % (node.http_port, path, ("?" + urlencode(params)) if params else "")


def study_rows(dom):
    table = next(dom.root.all("table", "studies"))
    return [tr for tr in table.all("tr") if "data-href" in tr.attrs]


def shown_name(pn):
    """A PN as the pages show it."""
    groups = [" ".join(c for c in g.split("^") if c) for g in pn.split("=")]
    groups = [g for g in groups if g]
    return groups[0] + "".join(" (%s)" % g for g in groups[1:]) if groups else ""


@pytest.fixture(scope="module")
def model(corpus):
    return F.Model(corpus.entries)


def test_index_lists_studies_newest_first(wnode, model):
    dom = Dom(browser(url(wnode, "/")))
    rows = study_rows(dom)
    studies = model.entities("STUDY")
    assert len(rows) == min(50, len(studies))
    uids = [tr.attrs["data-href"].rsplit("/", 1)[1] for tr in rows]
    assert set(uids) == {s.key for s in studies}
    by_uid = {s.key: s for s in studies}
    dates = [by_uid[u].value("StudyDate") for u in uids]
    dated = [d for d in dates if d is not None]
    assert dated == sorted(dated, reverse=True), dates
    assert all(d is not None for d in dates[:len(dated)]), "undated studies come last"
    for tr, u in zip(rows, uids):
        cells = [td.full_text().strip() for td in tr.all("td")]
        st = by_uid[u]
        assert cells[0] == shown_name(st.value("PatientName") or ""), (cells, u)
        assert cells[1].startswith(st.value("PatientID") or ""), cells


def test_search_by_non_latin_name(wnode, model):
    dom = Dom(browser(url(wnode, "/", name="山田")))
    rows = study_rows(dom)
    want = model.expect("STUDY", {"PatientName": "山田*"})
    assert want and len(rows) == len(want)
    for tr in rows:
        assert "山田" in next(tr.all("td")).full_text()


def test_search_by_name_case_insensitive(wnode, model):
    want = model.expect("STUDY", {"PatientName": "müller*"})
    assert want
    assert len(study_rows(Dom(browser(url(wnode, "/", name="müller"))))) == len(want)


def test_search_by_date_range(wnode, model):
    want = model.expect("STUDY", {"StudyDate": "20200101-20221231"})
    assert want
    rows = study_rows(Dom(browser(url(wnode, "/", **{"from": "2020-01-01", "to": "2022-12-31"}))))
    assert {tr.attrs["data-href"].rsplit("/", 1)[1] for tr in rows} == {e.key for e in want}


def test_bad_search_is_said(wnode):
    r = W.request(wnode.http_port, "/?from=yesterday")
    assert r.status == 400
    assert "YYYY-MM-DD" in r.body.decode()


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_study_page(wnode, model, testdir):
    st = max(model.entities("STUDY"), key=lambda s: len(s.children))
    assert len(st.children) >= 2
    page = url(wnode, "/studies/%s" % st.key)
    dom = Dom(browser(page))
    sections = list(dom.root.all("section", "series"))
    assert len(sections) == len(st.children)
    numbers = []
    for sec in sections:
        se_uid = sec.attrs["id"][len("series-"):]
        se = next(s for s in st.children if s.key == se_uid)
        numbers.append(se.value("SeriesNumber"))
        facts = dict(zip([dt.full_text() for dt in sec.all("dt")], [dd.full_text() for dd in sec.all("dd")]))
        assert facts.get("Modality") == se.value("Modality"), facts
        assert facts.get("Images") == str(len(se.children)), facts
        if se.value("SeriesDescription"):
            assert facts.get("Description") == se.value("SeriesDescription")
        assert "Transfer syntax" in facts
        middle = sorted(se.children, key=lambda i: (i.value("InstanceNumber") is None,
                                                    i.value("InstanceNumber") or 0, i.key))
        img = list(sec.all("img"))
        if img:
            src = img[0].attrs["src"]
            assert "/series/%s/instances/" % se_uid in src and src.endswith("/thumbnail")
            r = W.request(wnode.http_port, src)
            assert r.status == 200 and r.header("Content-Type") == "image/png"
            w, h = png_size(r.body)
            assert max(w, h) <= 128
            assert src.split("/instances/")[1].split("/")[0] in {i.key for i in middle}
    nums = [int(n) for n in numbers if n is not None]
    assert nums == sorted(nums), numbers
    shot = os.path.join(testdir, "study.png")
    browser(page, screenshot=shot)
    w, h = png_size(open(shot, "rb").read())
    assert (w, h) == (1280, 2000)


def test_patient_page_keeps_issuers_apart(wnode, model):
    pats = [p for p in model.patients.values() if p.key[0] == "SHARED-42"]
    assert len(pats) == 2
    for p in pats:
        dom = Dom(browser(url(wnode, "/patients", id=p.key[0], issuer=p.key[1])))
        rows = study_rows(dom)
        assert {tr.attrs["data-href"].rsplit("/", 1)[1] for tr in rows} == {s.key for s in p.children}
    assert W.request(wnode.http_port, "/patients?id=NOBODY").status == 404
    assert W.request(wnode.http_port, "/patients?id=A*").status == 400


def test_text_is_escaped(node_factory, scu_dir):
    node = node_factory(node_class=W.WebNode)
    evil = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    f = gen_corpus.make_instance(os.path.join(scu_dir, "evil.dcm"), name="evil",
                                 patient_name='Evil^"<b>bold</b>',
                                 set_attrs={"StudyDescription": evil[:64], "SeriesDescription": "<i>it</i>"})
    run = H.storescu(node.port, [f["path"]], scu_dir)
    assert run.all_success(), run.summary()
    for path in ("/", "/studies/%s" % f["study_instance_uid"]):
        html = browser(url(node, path))
        dom = Dom(html)
        assert not [s for s in dom.root.all("script") if "src" not in s.attrs], "an inline script"
        assert not list(dom.root.all("b")) and not list(dom.root.all("i"))
        title = next(dom.root.all("title")).full_text()
        assert title.strip() != "pwned", "a script from the data ran"
        assert "<script>document.title" in dom.root.full_text() or path == "/studies/%s" % \
            f["study_instance_uid"]
    r = W.request(node.http_port, "/")
    assert "Content-Security-Policy" in dict(r.headers)


def test_pages_of_fifty(node_factory, scu_dir):
    node = node_factory(node_class=W.WebNode)
    files = []
    for i in range(57):
        f = gen_corpus.make_instance(os.path.join(scu_dir, "p%02d.dcm" % i), name="page%02d" % i,
                                     patient_id="PG-%02d" % i,
                                     set_attrs={"StudyDate": "2023%02d%02d" % (1 + i // 28, 1 + i % 28)})
        files.append(f)
    run = H.storescu(node.port, [f["path"] for f in files], scu_dir)
    assert run.all_success(), run.summary()
    dom = Dom(browser(url(node, "/")))
    first = study_rows(dom)
    assert len(first) == 50
    nxt = [a for a in dom.root.all("a") if a.attrs.get("rel") == "next"]
    assert nxt
    second = study_rows(Dom(browser(url(node, "/") + nxt[0].attrs["href"][1:])))
    assert len(second) == 7
    ids = [list(tr.all("td"))[1].full_text().split()[0] for tr in first + second]
    assert ids == ["PG-%02d" % i for i in reversed(range(57))]
    assert re.search(r"studies 51 to 57", browser(url(node, "/", page=2)))

#!/usr/bin/python3
"""Synthetic but realistic index data for the C-FIND benchmark.

The whole data set follows from N (the number of instances) and a fixed
seed: the same N always gives the same patients, studies, series,
instances, files and queries, byte for byte.

    gen.py stats N                 counts and match statistics
    gen.py columns 0 TABLE         the column list of TABLE's COPY text
    gen.py copy N TABLE            COPY text for pacsnode's TABLE (patient,
                                   study, series, instance) on stdout
    gen.py files N DIR [SHARDS]    the instances as small Part-10 files (no
                                   pixel data), DIR/s<k>/<study>/<i>.dcm
    gen.py queries N OUT.json [PER_SHAPE [LARGE_TARGET]]
                                   the query plan, with the number of matches
                                   each query must have (from this model,
                                   never from a server)
    gen.py family-names N          the distinct family names of the patients
    gen.py fuzzy-expected N PLAN.json KEYS.tsv
                                   fill in the fuzzy name queries' matches
                                   from the names' Double Metaphone keys

Shape of the data for N instances: N*3/100 patients, N/10 studies, about
3 series per study (N/3.3 in all), about 3.3 instances per series with a long
tail (a few series of 100-400 instances). Names after the frequencies of
common surnames (SMITH about 0.8 % of patients, several other SMI* names),
a long tail of generated surnames, given names of which about 2.7 % end in
"SON" (JASON, MADISON, ...), a few non-ASCII names (Latin accents, Japanese
with ideographic and phonetic groups), about 10 % of names in mixed case.
Studies spread over 2016-2025, fewer on weekends; accession numbers unique
and increasing with time; one primary modality per study (CR, CT, MR, US,
NM, PT) with the series a real study of that kind has (PET/CT: PT and CT
series; NM: NM and sometimes CT).

Every level's attributes are split exactly as pacsnode's scp/attr_levels.c
does, so the attrs blobs are what a C-STORE of the file would index (run.sh
checks this on a small set).
"""

import bisect
import datetime
import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dicomenc as enc  # noqa: E402

VERSION = "v1"
CHARSET = "ISO_IR 192"
CALLING_AE = "BENCHLOAD"

SOP_CLASS = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}

# Surnames with their approximate share of the population, per 100,000.
SURNAMES = [
    ("SMITH", 828), ("JOHNSON", 655), ("WILLIAMS", 550), ("BROWN", 487), ("JONES", 483),
    ("GARCIA", 395), ("MILLER", 394), ("DAVIS", 378), ("RODRIGUEZ", 309), ("MARTINEZ", 298),
    ("HERNANDEZ", 294), ("LOPEZ", 218), ("GONZALEZ", 218), ("WILSON", 208), ("ANDERSON", 205),
    ("THOMAS", 201), ("TAYLOR", 195), ("MOORE", 188), ("JACKSON", 184), ("MARTIN", 180),
    ("LEE", 175), ("PEREZ", 165), ("THOMPSON", 164), ("WHITE", 163), ("HARRIS", 155),
    ("SANCHEZ", 155), ("CLARK", 142), ("RAMIREZ", 138), ("LEWIS", 137), ("ROBINSON", 136),
    ("WALKER", 133), ("YOUNG", 122), ("ALLEN", 121), ("KING", 119), ("WRIGHT", 118),
    ("SCOTT", 114), ("TORRES", 114), ("NGUYEN", 113), ("HILL", 112), ("FLORES", 111),
    ("GREEN", 110), ("ADAMS", 108), ("NELSON", 106), ("BAKER", 105), ("HALL", 104),
    ("RIVERA", 102), ("CAMPBELL", 101), ("MITCHELL", 100), ("CARTER", 99), ("ROBERTS", 98),
    ("GOMEZ", 97), ("PHILLIPS", 95), ("EVANS", 94), ("TURNER", 93), ("DIAZ", 93),
    ("PARKER", 91), ("CRUZ", 90), ("EDWARDS", 89), ("COLLINS", 88), ("REYES", 87),
    ("STEWART", 86), ("MORRIS", 85), ("MORALES", 84), ("MURPHY", 83), ("COOK", 82),
    ("ROGERS", 81), ("GUTIERREZ", 80), ("ORTIZ", 79), ("MORGAN", 78), ("COOPER", 77),
    ("PETERSON", 76), ("BAILEY", 75), ("REED", 74), ("KELLY", 73), ("HOWARD", 72),
    ("RAMOS", 71), ("KIM", 70), ("COX", 69), ("WARD", 68), ("RICHARDSON", 67),
    ("WATSON", 66), ("BROOKS", 65), ("CHAVEZ", 64), ("WOOD", 63), ("JAMES", 62),
    ("BENNETT", 61), ("GRAY", 60), ("MENDOZA", 59), ("RUIZ", 58), ("HUGHES", 57),
    ("PRICE", 56), ("ALVAREZ", 55), ("CASTILLO", 54), ("SANDERS", 53), ("PATEL", 52),
    ("MYERS", 51), ("LONG", 50), ("ROSS", 49), ("FOSTER", 48), ("JIMENEZ", 47),
    ("POWELL", 46), ("JENKINS", 45), ("PERRY", 44), ("RUSSELL", 43), ("SULLIVAN", 42),
    ("BELL", 41), ("COLEMAN", 40), ("BUTLER", 39), ("HENDERSON", 38), ("BARNES", 37),
    ("GONZALES", 36), ("FISHER", 35), ("VASQUEZ", 34), ("SIMMONS", 33), ("ROMERO", 32),
    ("JORDAN", 31), ("PATTERSON", 30), ("ALEXANDER", 29), ("HAMILTON", 28), ("GRAHAM", 27),
    ("REYNOLDS", 26), ("GRIFFIN", 25), ("WALLACE", 24), ("MORENO", 23), ("WEST", 22),
    ("WILLIAMSON", 21), ("HANSON", 20), ("OLSON", 20), ("LARSON", 19), ("CARLSON", 18),
    ("DAWSON", 16), ("GIBSON", 16), ("HUDSON", 14), ("MASON", 14), ("STEVENSON", 12),
    ("SMITHERS", 6), ("SMILEY", 9), ("SMIRNOV", 4), ("SMITHSON", 3), ("SMIT", 3),
    ("SMILLIE", 2), ("SMIDT", 2),
]

# Non-ASCII names: [surname, given] (mixed into the tail).
ACCENTED = [
    ("MÜLLER", "JÜRGEN"), ("SCHRÖDER", "BÄRBEL"), ("GARCÍA", "JOSÉ"), ("LÓPEZ", "MARÍA"),
    ("NÚÑEZ", "INÉS"), ("FRANÇOIS", "HÉLÈNE"), ("DUBOIS", "RENÉE"), ("JØRGENSEN", "SØREN"),
    ("ÅSTRÖM", "ÖRJAN"), ("NOWAK", "ŁUKASZ"), ("DVOŘÁK", "JIŘÍ"), ("ÇELIK", "GÜLŞEN"),
]
JAPANESE = [
    ("Yamada^Tarou", "山田^太郎", "やまだ^たろう"), ("Suzuki^Hanako", "鈴木^花子", "すずき^はなこ"),
    ("Tanaka^Ichiro", "田中^一郎", "たなか^いちろう"), ("Sato^Yuki", "佐藤^由紀", "さとう^ゆき"),
]

MALE = [
    ("JAMES", 33), ("JOHN", 32), ("ROBERT", 31), ("MICHAEL", 26), ("WILLIAM", 24), ("DAVID", 24),
    ("RICHARD", 15), ("JOSEPH", 14), ("THOMAS", 14), ("CHARLES", 13), ("CHRISTOPHER", 10),
    ("DANIEL", 10), ("MATTHEW", 9), ("ANTHONY", 9), ("MARK", 9), ("DONALD", 9), ("STEVEN", 8),
    ("PAUL", 8), ("ANDREW", 7), ("JOSHUA", 7), ("KENNETH", 7), ("KEVIN", 7), ("BRIAN", 7),
    ("GEORGE", 7), ("TIMOTHY", 6), ("RONALD", 6), ("EDWARD", 6), ("JASON", 6), ("JEFFREY", 6),
    ("RYAN", 5), ("JACOB", 5), ("GARY", 5), ("NICHOLAS", 5), ("ERIC", 5), ("JONATHAN", 5),
    ("STEPHEN", 5), ("LARRY", 5), ("JUSTIN", 4), ("SCOTT", 4), ("BRANDON", 4), ("BENJAMIN", 4),
    ("SAMUEL", 4), ("FRANK", 4), ("GREGORY", 4), ("RAYMOND", 4), ("ALEXANDER", 4), ("PATRICK", 3),
    ("JACK", 3), ("DENNIS", 3), ("JERRY", 3), ("TYLER", 3), ("AARON", 3), ("JOSE", 3), ("ADAM", 3),
    ("NATHAN", 3), ("HENRY", 3), ("PETER", 3), ("ZACHARY", 3), ("DOUGLAS", 3), ("HAROLD", 3),
    ("MASON", 2), ("JACKSON", 2), ("CARSON", 1), ("GRAYSON", 1), ("HUDSON", 1), ("HARRISON", 1),
    ("EMERSON", 0.5), ("BRYSON", 0.5), ("DAWSON", 0.5),
]
FEMALE = [
    ("MARY", 26), ("PATRICIA", 13), ("JENNIFER", 13), ("LINDA", 13), ("ELIZABETH", 13),
    ("BARBARA", 12), ("SUSAN", 11), ("JESSICA", 10), ("SARAH", 10), ("KAREN", 10), ("LISA", 9),
    ("NANCY", 9), ("BETTY", 9), ("MARGARET", 9), ("SANDRA", 9), ("ASHLEY", 8), ("KIMBERLY", 8),
    ("EMILY", 8), ("DONNA", 8), ("MICHELLE", 8), ("CAROL", 7), ("AMANDA", 7), ("DOROTHY", 7),
    ("MELISSA", 7), ("DEBORAH", 7), ("STEPHANIE", 7), ("REBECCA", 6), ("SHARON", 6), ("LAURA", 6),
    ("CYNTHIA", 6), ("KATHLEEN", 6), ("AMY", 6), ("ANGELA", 5), ("SHIRLEY", 5), ("ANNA", 5),
    ("BRENDA", 5), ("PAMELA", 5), ("EMMA", 5), ("NICOLE", 5), ("HELEN", 5), ("SAMANTHA", 4),
    ("KATHERINE", 4), ("CHRISTINE", 4), ("DEBRA", 4), ("RACHEL", 4), ("CAROLYN", 4), ("JANET", 4),
    ("CATHERINE", 4), ("MARIA", 4), ("HEATHER", 4), ("DIANE", 4), ("RUTH", 4), ("JULIE", 3),
    ("OLIVIA", 3), ("JOYCE", 3), ("VIRGINIA", 3), ("VICTORIA", 3), ("KELLY", 3), ("LAUREN", 3),
    ("ALLISON", 3), ("MADISON", 3), ("ADDISON", 1.5), ("ALISON", 1), ("ALLYSON", 0.5),
]

# Generated surnames for the long tail: onset + vowel + middle + ending.
ONSETS = ["B", "BR", "C", "CH", "D", "DR", "F", "G", "GR", "H", "J", "K", "KL", "L", "M",
          "N", "P", "PR", "R", "S", "SCH", "ST", "T", "TR", "V", "W", "Z", "SM", "SP", "BL"]
VOWELS = ["A", "E", "I", "O", "U", "AU", "EI", "OU", "IE"]
MIDDLES = ["L", "LL", "N", "NN", "R", "RR", "T", "TT", "M", "ND", "RT", "ST", "NK", "RD",
           "LD", "K", "V", "Z", "SS", "G"]
ENDINGS = [("ER", 10), ("ES", 5), ("IN", 6), ("ON", 5), ("AN", 6), ("ELL", 4), ("EN", 6),
           ("ICK", 3), ("OW", 3), ("EY", 4), ("ING", 3), ("ARD", 3), ("MAN", 4), ("SON", 4),
           ("SEN", 2), ("OV", 2), ("SKI", 2), ("ELLI", 2), ("EZ", 3), ("O", 3), ("A", 3), ("I", 2),
           ("", 6)]

DOCTORS_N = 400

# study templates: primary modality -> (share, [study descriptions], body part)
STUDY_KINDS = {
    "CR": (0.30, ["XR CHEST 2 VIEWS", "XR CHEST 1 VIEW", "XR KNEE 3 VIEWS", "XR HAND 3 VIEWS",
                  "XR LUMBAR SPINE", "XR ABDOMEN 1 VIEW", "XR SHOULDER", "XR PELVIS"]),
    "CT": (0.25, ["CT HEAD W/O CONTRAST", "CT CHEST W CONTRAST", "CT ABDOMEN PELVIS W CONTRAST",
                  "CT CHEST LOW DOSE SCREENING", "CT ANGIO CHEST PE", "CT SPINE CERVICAL"]),
    "MR": (0.15, ["MR BRAIN W/O CONTRAST", "MR BRAIN W AND W/O CONTRAST", "MR KNEE LEFT",
                  "MR LUMBAR SPINE", "MR PROSTATE", "MR ABDOMEN LIVER"]),
    "US": (0.17, ["US ABDOMEN COMPLETE", "US PELVIS TRANSVAGINAL", "US THYROID",
                  "US OB 2ND TRIMESTER", "US CAROTID DOPPLER", "US RENAL"]),
    "NM": (0.07, ["NM BONE SCAN WHOLE BODY", "NM MYOCARDIAL PERFUSION", "NM THYROID SCAN",
                  "NM LUNG VQ"]),
    "PT": (0.06, ["PET/CT WHOLE BODY FDG", "PET/CT SKULL BASE TO MID THIGH", "PET/CT PSMA"]),
}
BODY_PART = {"CR": ["CHEST", "KNEE", "HAND", "LSPINE", "ABDOMEN", "SHOULDER", "PELVIS"],
             "CT": ["HEAD", "CHEST", "ABDOMEN", "CSPINE"], "MR": ["BRAIN", "KNEE", "LSPINE", "PROSTATE", "LIVER"],
             "US": ["ABDOMEN", "PELVIS", "THYROID", "KIDNEY"], "NM": ["WHOLEBODY", "HEART", "THYROID"],
             "PT": ["WHOLEBODY"]}
MANUFACTURERS = {"CR": ["AGFA", "CARESTREAM", "FUJIFILM"], "CT": ["SIEMENS", "GE MEDICAL SYSTEMS", "CANON"],
                 "MR": ["SIEMENS", "PHILIPS", "GE MEDICAL SYSTEMS"], "US": ["PHILIPS", "GE HEALTHCARE"],
                 "NM": ["SIEMENS", "GE MEDICAL SYSTEMS"], "PT": ["SIEMENS", "GE MEDICAL SYSTEMS"]}
INSTITUTIONS = ["GENERAL HOSPITAL", "GENERAL HOSPITAL NORTH", "CITY IMAGING CENTER", "ST MARY CLINIC"]
SERIES_DESC = {
    "CR": ["PA", "LAT", "AP", "OBLIQUE"],
    "CT": ["SCOUT", "AXIAL 5MM", "AXIAL 1.25MM", "CORONAL MPR", "SAGITTAL MPR", "DOSE REPORT"],
    "MR": ["LOCALIZER", "T1 SAG", "T2 AX", "FLAIR AX", "DWI", "T1 POST AX", "T2 COR"],
    "US": ["B-MODE", "DOPPLER", "CINE"],
    "NM": ["WHOLE BODY ANT/POST", "SPECT", "STATIC"],
    "PT": ["PET AC", "PET NAC", "MIP"],
}

DATE0 = datetime.date(2016, 1, 1)
DATE1 = datetime.date(2025, 12, 31)


def root_uid(n):
    h = hashlib.sha256(("pacsnode-bench-find-%s:%d" % (VERSION, n)).encode()).hexdigest()
    return "2.25.%d" % (int(h[:30], 16) | (1 << 116))   # no leading zero; 36 digits


class Model:
    """Patients, studies and series for N instances; instances implicit."""

    def __init__(self, n):
        if n < 100:
            raise SystemExit("gen.py: N must be at least 100")
        self.n = n
        rng = random.Random("pacsnode-bench-find-%s:%d" % (VERSION, n))
        self.root = root_uid(n)
        n_pat = max(1, n * 3 // 100)
        n_study = max(n_pat, n // 10)

        sur_names = [s for s, _ in SURNAMES]
        sur_w = [w for _, w in SURNAMES]
        sur_total = sum(sur_w)
        end_names = [e for e, _ in ENDINGS]
        end_w = [w for _, w in ENDINGS]
        male_n, male_w = [g for g, _ in MALE], [w for _, w in MALE]
        fem_n, fem_w = [g for g, _ in FEMALE], [w for _, w in FEMALE]

        def surname():
            u = rng.random() * 100000
            if u < sur_total:
                return rng.choices(sur_names, sur_w)[0]
            s = rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(MIDDLES)
            if rng.random() < 0.3:
                s += rng.choice(VOWELS) + rng.choice(MIDDLES)
            return s + rng.choices(end_names, end_w)[0]

        # --- patients ---------------------------------------------------
        self.pat_id, self.pat_name, self.pat_birth, self.pat_sex = [], [], [], []
        used_ids = set()
        for i in range(n_pat):
            pid = "%08d" % (20000000 + i * 37 + rng.randrange(37))
            assert pid not in used_ids
            used_ids.add(pid)
            u = rng.random()
            sex = "M" if u < 0.485 else ("F" if u < 0.995 else "O")
            r = rng.random()
            if i < 2:        # the first two non-ASCII, so that small sets have some
                r = 0.002 * (1 - i) + 0.01 * i
            if r < 0.003:
                name = "=".join(rng.choice(JAPANESE))
            elif r < 0.013:
                fam, giv = rng.choice(ACCENTED)
                name = fam + "^" + giv
            else:
                fam = surname()
                giv = rng.choices(male_n, male_w)[0] if sex == "M" or (sex == "O" and rng.random() < .5) \
                    else rng.choices(fem_n, fem_w)[0]
                f = rng.random()
                if f < 0.01:
                    name = fam                         # given name unknown
                elif f < 0.13:
                    name = "%s^%s^%s" % (fam, giv, chr(65 + rng.randrange(26)))
                else:
                    name = fam + "^" + giv
                if rng.random() < 0.10:                # mixed case
                    name = "^".join(c.capitalize() for c in name.split("^"))
            birth = DATE0 - datetime.timedelta(days=rng.randrange(0, 90 * 365)) + datetime.timedelta(days=2 * 365)
            self.pat_id.append(pid)
            self.pat_name.append(name)
            self.pat_birth.append(birth)
            self.pat_sex.append(sex)

        # --- studies: every patient one, the rest heavy-tailed ------------
        weights = [rng.lognormvariate(0, 1.2) for _ in range(n_pat)]
        owners = list(range(n_pat)) + rng.choices(range(n_pat), weights, k=n_study - n_pat)
        kinds = list(STUDY_KINDS)
        kind_w = [STUDY_KINDS[k][0] for k in kinds]
        span = (DATE1 - DATE0).days + 1
        raw = []
        for p in owners:
            birth = self.pat_birth[p]
            while True:
                d = DATE0 + datetime.timedelta(days=rng.randrange(span))
                if d.weekday() < 5 or rng.random() < 0.3:
                    break
            if d < birth:
                d = birth
            secs = rng.randrange(7 * 3600, 19 * 3600)
            kind = rng.choices(kinds, kind_w)[0]
            raw.append((d, secs, p, kind))
        raw.sort(key=lambda t: (t[0], t[1]))      # pk order = arrival order
        self.st_date, self.st_secs, self.st_pat, self.st_kind = [], [], [], []
        self.st_acc, self.st_id, self.st_desc, self.st_ref = [], [], [], []
        doctors = []
        for _ in range(DOCTORS_N):
            doctors.append("%s^%s" % (surname(), rng.choices(male_n + fem_n, male_w + fem_w)[0]))
        acc = 1000000
        for d, secs, p, kind in raw:
            acc += 1 + rng.randrange(3)
            self.st_date.append(d)
            self.st_secs.append(secs)
            self.st_pat.append(p)
            self.st_kind.append(kind)
            self.st_acc.append("A%02d%07d" % (d.year % 100, acc))
            self.st_id.append(str(rng.randrange(1, 100000)))
            self.st_desc.append(rng.choice(STUDY_KINDS[kind][1]))
            self.st_ref.append(rng.choice(doctors) if rng.random() < 0.9 else "")
        self.pat_studies = [[] for _ in range(n_pat)]
        for s, p in enumerate(self.st_pat):
            self.pat_studies[p].append(s)

        # --- series ------------------------------------------------------
        self.se_study, self.se_mod, self.se_num, self.se_desc = [], [], [], []
        self.se_body, self.se_manu, self.se_inst, self.se_count, self.se_secs = [], [], [], [], []
        self.st_series = []
        for s, kind in enumerate(self.st_kind):
            plan = self._series_plan(rng, kind)
            first = len(self.se_study)
            body = rng.choice(BODY_PART[kind])
            inst = rng.choice(INSTITUTIONS)
            for k, (mod, count) in enumerate(plan):
                self.se_study.append(s)
                self.se_mod.append(mod)
                self.se_num.append(k + 1 if rng.random() < 0.9 else 100 * (k + 1))
                self.se_desc.append(rng.choice(SERIES_DESC[mod]))
                self.se_body.append(body if mod == kind or kind != "PT" else "WHOLEBODY")
                self.se_manu.append(rng.choice(MANUFACTURERS[mod]))
                self.se_inst.append(inst)
                self.se_count.append(count)
                self.se_secs.append(min(self.st_secs[s] + 60 * k + rng.randrange(60), 86399 - 3600))
            self.st_series.append(range(first, len(self.se_study)))
        self._fit_instances(rng, n)
        self.se_first = []
        acc = 0
        for c in self.se_count:
            self.se_first.append(acc)
            acc += c

    @staticmethod
    def _series_plan(rng, kind):
        """[(modality, instance count)] of one study."""
        def small(lo, hi):
            return rng.randint(lo, hi)

        def big(median, cap):
            return max(20, min(cap, int(rng.lognormvariate(0, 0.6) * median)))

        if kind == "CR":
            return [("CR", small(1, 2)) for _ in range(rng.choice([1, 2, 2, 3, 3, 4]))]
        if kind == "US":
            return [("US", small(1, 6)) for _ in range(rng.choice([1, 2, 2, 3]))]
        if kind == "CT":
            out = [("CT", small(1, 3))]
            for _ in range(rng.choice([1, 2, 2, 3, 3, 4])):
                out.append(("CT", big(60, 400) if rng.random() < 0.04 else small(1, 6)))
            return out
        if kind == "MR":
            out = [("MR", small(1, 3))]
            for _ in range(rng.choice([2, 3, 3, 4, 5])):
                out.append(("MR", big(40, 300) if rng.random() < 0.03 else small(1, 6)))
            return out
        if kind == "NM":
            out = [("NM", small(1, 4)) for _ in range(rng.choice([1, 2, 2, 3]))]
            if rng.random() < 0.4:
                out.append(("CT", big(50, 250) if rng.random() < 0.1 else small(1, 4)))
            return out
        # PT: PET/CT
        out = [("CT", small(1, 2)), ("CT", big(80, 400) if rng.random() < 0.1 else small(2, 8))]
        for _ in range(rng.choice([1, 2, 2])):
            out.append(("PT", big(80, 400) if rng.random() < 0.1 else small(2, 8)))
        return out

    def _fit_instances(self, rng, n):
        """Scales the series sizes (random rounding, at least 1 each) so that
        the total is about n, then adds or removes single instances at
        random to make it exactly n."""
        total = sum(self.se_count)
        f = n / total
        for i, c in enumerate(self.se_count):
            x = c * f
            self.se_count[i] = max(1, int(x) + (rng.random() < x - int(x)))
        total = sum(self.se_count)
        ns = len(self.se_count)
        while total < n:
            self.se_count[rng.randrange(ns)] += 1
            total += 1
        while total > n:
            i = rng.randrange(ns)
            if self.se_count[i] > 1:
                self.se_count[i] -= 1
                total -= 1

    # --- derived values --------------------------------------------------
    def study_uid(self, s):
        return "%s.1.%d" % (self.root, s + 1)

    def series_uid(self, se):
        return "%s.2.%d" % (self.root, se + 1)

    def sop_uid(self, i):
        return "%s.3.%d" % (self.root, i + 1)

    @staticmethod
    def da(d):
        return d.strftime("%Y%m%d")

    @staticmethod
    def tm(secs):
        return "%02d%02d%02d" % (secs // 3600, secs // 60 % 60, secs % 60)

    @staticmethod
    def tm_iso(secs):
        return "%02d:%02d:%02d" % (secs // 3600, secs // 60 % 60, secs % 60)

    def age(self, s):
        b, d = self.pat_birth[self.st_pat[s]], self.st_date[s]
        years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
        return "%03dY" % max(0, years)

    # --- the attributes of each level (as scp/attr_levels.c splits them) --
    def patient_items(self, p):
        items = [(0x00100010, self.pat_name[p]), (0x00100020, self.pat_id[p]),
                 (0x00100030, self.da(self.pat_birth[p])), (0x00100040, self.pat_sex[p])]
        return items

    def study_items(self, s):
        items = [(0x00080020, self.da(self.st_date[s])), (0x00080030, self.tm(self.st_secs[s])),
                 (0x00080050, self.st_acc[s]), (0x00081030, self.st_desc[s]),
                 (0x00101010, self.age(s)), (0x0020000D, self.study_uid(s)), (0x00200010, self.st_id[s])]
        if self.st_ref[s]:
            items.append((0x00080090, self.st_ref[s]))
        return items

    def series_items(self, se):
        s = self.se_study[se]
        mod = self.se_mod[se]
        return [(0x00080021, self.da(self.st_date[s])), (0x00080031, self.tm(self.se_secs[se])),
                (0x00080060, mod), (0x00080070, self.se_manu[se]), (0x00080080, self.se_inst[se]),
                (0x00081010, "%s%02d" % (mod, 1 + se % 7)), (0x0008103E, self.se_desc[se]),
                (0x00180015, self.se_body[se]), (0x00181030, self.se_desc[se] + " PROTOCOL"),
                (0x0020000E, self.series_uid(se)), (0x00200011, str(self.se_num[se]))]

    def instance_items(self, se, k):
        """k: 0-based index of the instance within its series."""
        s = self.se_study[se]
        mod = self.se_mod[se]
        itype = "ORIGINAL\\PRIMARY\\AXIAL" if mod in ("CT", "PT") else "ORIGINAL\\PRIMARY"
        secs = min(self.se_secs[se] + k // 4, 86399)
        return [(0x00080008, itype), (0x00080016, SOP_CLASS[mod]),
                (0x00080018, self.sop_uid(self.se_first[se] + k)),
                (0x00080023, self.da(self.st_date[s])), (0x00080033, self.tm(secs)),
                (0x00200013, str(k + 1))]


# ---------------------------------------------------------------------------
# COPY text for pacsnode's tables
# ---------------------------------------------------------------------------
CS_ITEM = (0x00080005, CHARSET)
CS_ELEM = enc.element(*CS_ITEM)

COPY_COLUMNS = {
    "patient": "pk, patient_id, issuer, patient_name, patient_birth_date, patient_sex, attrs",
    "study": "pk, patient_fk, study_uid, study_date, study_time, accession_number, study_id, "
             "study_description, referring_physician_name, attrs",
    "series": "pk, study_fk, series_uid, modality, series_number, series_description, series_date, "
              "series_time, body_part_examined, protocol_name, attrs",
    "instance": "pk, series_fk, sop_uid, sop_class_uid, instance_number, image_type, content_date, "
                "content_time, transfer_syntax_uid, path, size, checksum, specific_character_set, "
                "calling_ae, attrs",
}


def esc(v):
    if v is None or v == "":
        return "\\N"
    return str(v).replace("\\", "\\\\")


def blob(items):
    return "\\\\x" + enc.dataset([CS_ITEM] + items).hex()


def meta_len(sop_class, sop_uid):
    return len(enc.part10(b"", sop_class, sop_uid))


def copy_rows(m, table, out):
    w = out.write
    if table == "patient":
        for p in range(len(m.pat_id)):
            w("%d\t%s\t\t%s\t%s\t%s\t%s\n" % (
                p + 1, esc(m.pat_id[p]), esc(m.pat_name[p]), m.pat_birth[p].isoformat(),
                esc(m.pat_sex[p]), blob(m.patient_items(p))))
    elif table == "study":
        for s in range(len(m.st_pat)):
            w("%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" % (
                s + 1, m.st_pat[s] + 1, m.study_uid(s), m.st_date[s].isoformat(), m.tm_iso(m.st_secs[s]),
                esc(m.st_acc[s]), esc(m.st_id[s]), esc(m.st_desc[s]), esc(m.st_ref[s]),
                blob(m.study_items(s))))
    elif table == "series":
        for se in range(len(m.se_study)):
            s = m.se_study[se]
            w("%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n" % (
                se + 1, s + 1, m.series_uid(se), m.se_mod[se], m.se_num[se], esc(m.se_desc[se]),
                m.st_date[s].isoformat(), m.tm_iso(m.se_secs[se]), esc(m.se_body[se]),
                esc(m.se_desc[se] + " PROTOCOL"), blob(m.series_items(se))))
    elif table == "instance":
        ts = enc.EXPLICIT_LE
        for se in range(len(m.se_study)):
            s = m.se_study[se]
            p = m.st_pat[s]
            # file size: meta + union of the levels (the charset once)
            upper = (len(enc.dataset(m.patient_items(p))) + len(enc.dataset(m.study_items(s)))
                     + len(enc.dataset(m.series_items(se))) + len(CS_ELEM))
            sh = hashlib.sha256(m.series_uid(se).encode()).hexdigest()
            folder = "%s/%s/%s/" % (sh[:2], sh[2:4], sh[:32])
            mod = m.se_mod[se]
            cls = SOP_CLASS[mod]
            itype = esc("ORIGINAL\\PRIMARY\\AXIAL" if mod in ("CT", "PT") else "ORIGINAL\\PRIMARY")
            date = m.st_date[s].isoformat()
            for k in range(m.se_count[se]):
                i = m.se_first[se] + k
                uid = m.sop_uid(i)
                items = m.instance_items(se, k)
                ds = enc.dataset(items)
                size = meta_len(cls, uid) + upper + len(ds)
                ih = hashlib.sha256(uid.encode()).hexdigest()
                w("%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s%s.00000001.dcm\t%d\txxh3-128:%s\t%s\t%s\t\\\\x%s\n" % (
                    i + 1, se + 1, uid, cls, k + 1, itype, date, m.tm_iso(min(m.se_secs[se] + k // 4, 86399)),
                    ts, folder, ih[:32], size, ih[32:], CHARSET, CALLING_AE, (CS_ELEM + ds).hex()))
    else:
        raise SystemExit("gen.py: unknown table %s" % table)


# ---------------------------------------------------------------------------
# Part-10 files
# ---------------------------------------------------------------------------
def write_files(m, outdir, shards):
    """DIR/s<k>/<study>/<i>.dcm; study s goes to shard s % shards, so that
    parallel senders work on different studies."""
    for s in range(len(m.st_pat)):
        p = m.st_pat[s]
        d = os.path.join(outdir, "s%d" % (s % shards), "%06d" % s)
        os.makedirs(d, exist_ok=True)
        upper = [CS_ITEM] + m.patient_items(p) + m.study_items(s)
        for se in m.st_series[s]:
            ser = upper + m.series_items(se)
            for k in range(m.se_count[se]):
                items = m.instance_items(se, k)
                i = m.se_first[se] + k
                data = enc.part10(enc.dataset(ser + items), SOP_CLASS[m.se_mod[se]], m.sop_uid(i))
                with open(os.path.join(d, "%07d.dcm" % i), "wb") as f:
                    f.write(data)


# ---------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------
T = {  # keyword -> tag
    "QueryRetrieveLevel": 0x00080052, "PatientName": 0x00100010, "PatientID": 0x00100020,
    "PatientBirthDate": 0x00100030, "PatientSex": 0x00100040, "StudyDate": 0x00080020,
    "StudyTime": 0x00080030, "AccessionNumber": 0x00080050, "StudyID": 0x00200010,
    "StudyDescription": 0x00081030, "ReferringPhysicianName": 0x00080090,
    "StudyInstanceUID": 0x0020000D, "ModalitiesInStudy": 0x00080061,
    "NumberOfStudyRelatedSeries": 0x00201206, "NumberOfStudyRelatedInstances": 0x00201208,
    "SeriesInstanceUID": 0x0020000E, "Modality": 0x00080060, "SeriesNumber": 0x00200011,
    "SeriesDescription": 0x0008103E, "SeriesDate": 0x00080021, "SeriesTime": 0x00080031,
    "BodyPartExamined": 0x00180015, "NumberOfSeriesRelatedInstances": 0x00201209,
    "SOPInstanceUID": 0x00080018, "SOPClassUID": 0x00080016, "InstanceNumber": 0x00200013,
}
STUDY_RETURN = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
                "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                "NumberOfStudyRelatedInstances"]
SERIES_RETURN = ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                 "SeriesDate", "SeriesTime", "BodyPartExamined", "NumberOfSeriesRelatedInstances"]
IMAGE_RETURN = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"]


# the extended negotiation a shape with "ext_neg" proposes for Study Root
# C-FIND (PS3.4 C.5.1.1.1): relational queries, combined date-time
# matching, fuzzy semantic matching of person names
EXT_NEG = [1, 1, 1]


def family(name):
    """The family name component of a PN's alphabetic group, as the node's
    pn_phonetic(name, 1) (migration 012) takes it."""
    return name.split("=")[0].split("^")[0]


def fold(name):
    return name.upper()


def month_range(y, mo):
    first = datetime.date(y, mo, 1)
    nxt = datetime.date(y + (mo == 12), mo % 12 + 1, 1)
    return first, nxt - datetime.timedelta(days=1)


def build_queries(m, per_shape, warmup, large_target, large_repeat, literal_repeat):
    rng = random.Random("pacsnode-bench-find-queries-%s:%d" % (VERSION, m.n))
    n_pat, n_study, n_series = len(m.pat_id), len(m.st_pat), len(m.se_study)
    folded = [fold(x) for x in m.pat_name]
    studies_of = [len(x) for x in m.pat_studies]
    dates = m.st_date                       # sorted
    total = per_shape + warmup

    def count_names(pred):
        return sum(studies_of[p] for p in range(n_pat) if pred(folded[p]))

    shapes = []

    def shape(name, label, level, ret, queries):
        shapes.append({"name": name, "label": label, "level": level,
                       "return_keys": [[T[k], k] for k in ret],
                       "warmup": queries[:warmup], "queries": queries[warmup:]})

    # STUDY level by exact PatientID
    q = []
    for _ in range(total):
        p = rng.randrange(n_pat)
        q.append({"keys": {"PatientID": m.pat_id[p]}, "expected": studies_of[p]})
    shape("patient_id", "STUDY PatientID", "STUDY", STUDY_RETURN, q)

    # PatientName prefix: SMI* first, then 3-letter prefixes of random
    # patients' family names (so the common ones come up more often)
    pats = []
    while len(pats) < total - 1:
        fam = folded[rng.randrange(n_pat)].split("^")[0].split("=")[0]
        if len(fam) >= 3 and fam[:3].isascii() and fam[:3].isalpha():
            pats.append(fam[:3] + "*")
    pats = pats[:warmup] + ["SMI*"] + pats[warmup:]
    cache = {}
    q = []
    for pat in pats:
        if pat not in cache:
            cache[pat] = count_names(lambda x, pre=pat[:-1]: x.startswith(pre))
        q.append({"keys": {"PatientName": pat}, "expected": cache[pat]})
    shape("name_prefix", "STUDY PatientName XYZ* (varied)", "STUDY", STUDY_RETURN, q)

    # PatientName suffix: *SON first, then the last 3 letters of random
    # patients' whole names
    pats = []
    while len(pats) < total - 1:
        v = folded[rng.randrange(n_pat)]
        if len(v) >= 3 and v[-3:].isascii() and v[-3:].isalpha():
            pats.append("*" + v[-3:])
    pats = pats[:warmup] + ["*SON"] + pats[warmup:]
    q = []
    for pat in pats:
        if pat not in cache:
            cache[pat] = count_names(lambda x, suf=pat[1:]: x.endswith(suf))
        q.append({"keys": {"PatientName": pat}, "expected": cache[pat]})
    shape("name_suffix", "STUDY PatientName *XYZ (varied)", "STUDY", STUDY_RETURN, q)

    # the literal SMI* and *SON, repeated (for comparison with the
    # figures quoted there)
    for name, pat, label in ((("name_smi", "SMI*", "STUDY PatientName SMI* (literal)"),
                              ("name_son", "*SON", "STUDY PatientName *SON (literal)")) if literal_repeat else ()):
        q = {"keys": {"PatientName": pat}, "expected": cache[pat]}
        shapes.append({"name": name, "label": label, "level": "STUDY",
                       "return_keys": [[T[k], k] for k in STUDY_RETURN],
                       "warmup": [q] if warmup else [], "queries": [q] * literal_repeat})

    # StudyDate over one calendar month
    q = []
    for _ in range(total):
        y = rng.randrange(DATE0.year, DATE1.year + 1)
        mo = rng.randrange(1, 13)
        a, b = month_range(y, mo)
        n = bisect.bisect_right(dates, b) - bisect.bisect_left(dates, a)
        q.append({"keys": {"StudyDate": "%s-%s" % (m.da(a), m.da(b))}, "expected": n})
    shape("date_month", "STUDY StudyDate one month", "STUDY", STUDY_RETURN, q)

    # AccessionNumber
    q = []
    for _ in range(total):
        s = rng.randrange(n_study)
        q.append({"keys": {"AccessionNumber": m.st_acc[s]}, "expected": 1})
    shape("accession", "STUDY AccessionNumber", "STUDY", STUDY_RETURN, q)

    # SERIES level: Modality within a study
    q = []
    for _ in range(total):
        s = rng.randrange(n_study)
        mods = [m.se_mod[se] for se in m.st_series[s]]
        mod = rng.choice(mods)
        q.append({"keys": {"StudyInstanceUID": m.study_uid(s), "Modality": mod},
                  "expected": mods.count(mod)})
    shape("series_modality", "SERIES Modality in a study", "SERIES", SERIES_RETURN, q)

    # IMAGE level: all instances of a series
    q = []
    for _ in range(total):
        se = rng.randrange(n_series)
        q.append({"keys": {"StudyInstanceUID": m.study_uid(m.se_study[se]),
                           "SeriesInstanceUID": m.series_uid(se)},
                  "expected": m.se_count[se]})
    shape("image_series", "IMAGE all of a series", "IMAGE", IMAGE_RETURN, q)

    # --- extended negotiation shapes (issue 22): on an association that
    # proposed relational queries, combined date-time and fuzzy matching of
    # person names (findclient.py opens it for shapes with "ext_neg")
    def ext_shape(name, label, level, ret, queries):
        shape(name, label, level, ret, queries)
        shapes[-1]["ext_neg"] = EXT_NEG

    # SERIES by Modality and SeriesDate (one day) over all studies: no
    # StudyInstanceUID, which only a relational query may leave out
    by_day_mod = {}
    for se, s in enumerate(m.se_study):
        k = (m.st_date[s], m.se_mod[se])
        by_day_mod[k] = by_day_mod.get(k, 0) + 1
    q = []
    for _ in range(total):
        se = rng.randrange(n_series)
        d, mod = m.st_date[m.se_study[se]], m.se_mod[se]
        q.append({"keys": {"Modality": mod, "SeriesDate": m.da(d)}, "expected": by_day_mod[(d, mod)]})
    ext_shape("rel_series_mod_date", "SERIES Modality+date, all studies", "SERIES", SERIES_RETURN, q)

    # IMAGE by SOPInstanceUID alone (no study, no series)
    q = []
    n_inst = sum(m.se_count)
    for _ in range(total):
        q.append({"keys": {"SOPInstanceUID": m.sop_uid(rng.randrange(n_inst))}, "expected": 1})
    ext_shape("rel_image_sop", "IMAGE SOPInstanceUID alone", "IMAGE", IMAGE_RETURN, q)

    # StudyDate + StudyTime as one range over a month (combined date-time
    # matching): from a day at a time to a month later at another time
    instants = sorted(zip(m.st_date, m.st_secs))
    q = []
    for _ in range(total):
        a = DATE0 + datetime.timedelta(days=rng.randrange((DATE1 - DATE0).days - 31))
        b = a + datetime.timedelta(days=30)
        t0, t1 = rng.randrange(86400), rng.randrange(86400)
        n = bisect.bisect_right(instants, (b, t1)) - bisect.bisect_left(instants, (a, t0))
        q.append({"keys": {"StudyDate": "%s-%s" % (m.da(a), m.da(b)),
                           "StudyTime": "%s-%s" % (m.tm(t0), m.tm(t1))}, "expected": n})
    ext_shape("dt_month", "STUDY Date+Time one month, combined", "STUDY", STUDY_RETURN, q)

    # PatientName fuzzy: a random patient's family name alone; it matches
    # every patient whose family name has the same Double Metaphone key.
    # The keys are not computed here: "fuzzy_family" names the query's
    # family name and run.sh fills "expected" from PostgreSQL's dmetaphone
    # over the generator's names (gen.py fuzzy-expected)
    q = []
    while len(q) < total:
        fam = family(m.pat_name[rng.randrange(n_pat)])
        if fam.isascii() and fam.isalpha():
            q.append({"keys": {"PatientName": fam}, "expected": None, "fuzzy_family": fam})
    ext_shape("fuzzy_name", "STUDY PatientName fuzzy (family)", "STUDY", STUDY_RETURN, q)

    # Large result: the first large_target studies by date (all of them
    # when there are fewer)
    last = dates[min(large_target, n_study) - 1]
    n = bisect.bisect_right(dates, last)
    big = {"keys": {"StudyDate": "%s-%s" % (m.da(dates[0]), m.da(last))}, "expected": n}
    shapes.append({"name": "large", "label": "STUDY large result (date range)", "level": "STUDY",
                   "return_keys": [[T[k], k] for k in STUDY_RETURN],
                   "warmup": [big] if warmup else [], "queries": [big] * large_repeat})
    return {"n_instances": m.n, "version": VERSION, "shapes": shapes}


def fill_fuzzy_expected(m, plan_path, keys_path):
    """Fill in the expected matches of the fuzzy_name queries of a plan
    from KEYS (lines "family name TAB Double Metaphone key", the key empty
    when there is none: what PostgreSQL's dmetaphone gives for the names of
    `gen.py family-names N`, which run.sh asks it for). A family name alone
    matches, fuzzily, the patients whose family name has its key, and as a
    folded single value those whose whole name it is (docs/find.md)."""
    keys = {}
    with open(keys_path, encoding="utf-8") as f:
        for line in f:
            name, _, key = line.rstrip("\n").partition("\t")
            keys[name] = key or None
    studies_of = [len(x) for x in m.pat_studies]
    pat_key = [keys.get(family(x)) for x in m.pat_name]
    folded = [fold(x) for x in m.pat_name]
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    cache = {}
    for sh in plan["shapes"]:
        for q in sh["warmup"] + sh["queries"]:
            fam = q.get("fuzzy_family")
            if fam is None:
                continue
            if fam not in cache:
                k, ff = keys[fam], fold(fam)
                cache[fam] = sum(studies_of[p] for p in range(len(m.pat_name))
                                 if (k is not None and pat_key[p] == k) or folded[p] == ff)
            q["expected"] = cache[fam]
    with open(plan_path, "w", encoding="utf-8") as f:
        json.dump(plan, f, ensure_ascii=False, indent=0)


def stats(m):
    n_pat, n_study = len(m.pat_id), len(m.st_pat)
    folded = [fold(x) for x in m.pat_name]
    studies_of = [len(x) for x in m.pat_studies]
    smi = sum(studies_of[p] for p in range(n_pat) if folded[p].startswith("SMI"))
    son = sum(studies_of[p] for p in range(n_pat) if folded[p].endswith("SON"))
    counts = sorted(m.se_count)
    spp = sorted(studies_of)
    mods = {}
    for x in m.se_mod:
        mods[x] = mods.get(x, 0) + 1
    return {
        "instances": sum(m.se_count), "patients": n_pat, "studies": n_study, "series": len(m.se_study),
        "studies_per_patient": {"median": spp[len(spp) // 2], "max": spp[-1]},
        "instances_per_series": {"mean": round(sum(counts) / len(counts), 2), "median": counts[len(counts) // 2],
                                 "p99": counts[int(len(counts) * 0.99)], "max": counts[-1]},
        "series_per_study": round(len(m.se_study) / n_study, 2),
        "series_by_modality": mods,
        "study_dates": [m.st_date[0].isoformat(), m.st_date[-1].isoformat()],
        "studies_SMI*": smi, "studies_*SON": son,
        "distinct_names": len(set(m.pat_name)),
    }


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    cmd, n = argv[1], int(argv[2])
    if cmd == "columns":
        print(COPY_COLUMNS[argv[3]])
        return
    m = Model(n)
    if cmd == "stats":
        print(json.dumps(stats(m), indent=1))
    elif cmd == "copy":
        out = open(sys.stdout.fileno(), "w", encoding="utf-8", buffering=1 << 20, closefd=False)
        copy_rows(m, argv[3], out)
        out.flush()
    elif cmd == "files":
        write_files(m, argv[3], int(argv[4]) if len(argv) > 4 else 4)
    elif cmd == "queries":
        per_shape = int(argv[4]) if len(argv) > 4 else 100
        large_target = int(argv[5]) if len(argv) > 5 else 10000
        large_repeat = int(os.environ.get("LARGE_REPEAT", "3"))
        warm = int(os.environ.get("WARMUP", "5"))
        literal = int(os.environ.get("LITERAL_REPEAT", "20"))
        plan = build_queries(m, per_shape, warm, large_target, large_repeat, literal)
        with open(argv[3], "w") as f:
            json.dump(plan, f, ensure_ascii=False, indent=0)
    elif cmd == "family-names":
        for name in sorted(set(family(x) for x in m.pat_name)):
            print(name)
    elif cmd == "fuzzy-expected":
        fill_fuzzy_expected(m, argv[3], argv[4])
    else:
        raise SystemExit("gen.py: unknown command %s" % cmd)


if __name__ == "__main__":
    main(sys.argv)

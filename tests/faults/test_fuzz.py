"""Property-based fuzz of the lab-file and manifest parsers (issue 18): every input is either
valid or refused with a UsageError (exit 2) of one line naming its source, never another
exception (a traceback). Pure: no root, no lab; ~200 examples per property."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab import labfile, yamlin
from netlab.api import manifests
from netlab.errors import UsageError

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
LAB = labfile.parse_lab(labfile.default_lab_text())
BASE_LAB = yaml.safe_load(labfile.default_lab_text())  # its workloads are fuzzed as manifests
BASE_DOCS = list(BASE_LAB.pop("workloads")) + [{
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "labels": {"app": "x"}},
    "spec": {"nodeName": "kub-node-1", "containers": [
        {"name": "c", "image": "netlab/hello", "env": [{"name": "A", "value": "1"}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["", "0", "10.1.1.4", "kub-node-0", "netlab/hello",
                                                           "1e9", "-1", "yes", "~", "a" * 300]))
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                      max_leaves=12)


def paths(doc, prefix=()):
    """Every (container, key) place in a document."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((prefix, k))
            out += paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((prefix, i))
            out += paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw, base):
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        places = paths(doc)
        if not places:
            break
        prefix, key = draw(st.sampled_from(places))
        parent = doc
        for p in prefix:
            parent = parent[p]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[key] = draw(values)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(values)
        else:
            parent.append(draw(values))
    return doc


def refused_in_one_line(fn, source: str):
    try:
        return fn()
    except UsageError as e:
        msg = str(e)
        assert e.exit_code == 2
        assert "\n" not in msg and len(msg) <= 400, msg
        assert msg.startswith(source) or msg.startswith("-f "), msg
        return None


def dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@SETTINGS
@given(mutated(BASE_LAB))
def test_mutated_lab_files_are_valid_or_refused_in_one_line(doc):
    refused_in_one_line(lambda: labfile.parse_lab(dump(doc), "lab.yaml"), "lab.yaml")


@SETTINGS
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_as_a_lab_file(data):
    def parse():
        return labfile.parse_lab(yamlin.decode(data, "lab.yaml"), "lab.yaml")
    refused_in_one_line(parse, "lab.yaml")


@SETTINGS
@given(st.text(alphabet="ab:- \n[]{}&*!|>'\"#%@`,?\t", max_size=200))
def test_yaml_punctuation_soup(text):
    refused_in_one_line(lambda: labfile.parse_lab(text, "lab.yaml"), "lab.yaml")
    refused_in_one_line(lambda: manifests.parse(text, "m.yaml"), "m.yaml")


@SETTINGS
@given(st.sampled_from(BASE_DOCS).flatmap(mutated))
def test_mutated_manifests_are_valid_or_refused_in_one_line(doc):
    def apply_checks():
        docs = manifests.parse(dump(doc), "m.yaml")
        manifests.validate(docs, LAB)
        for d in docs:
            if d.kind in ("Pod", "Deployment"):  # their checks need no store for a new object
                manifests.KINDS[d.kind].check_against(None, LAB, d, None)
        return docs
    refused_in_one_line(apply_checks, "m.yaml")


@SETTINGS
@given(st.lists(st.sampled_from(BASE_DOCS).flatmap(mutated), min_size=1, max_size=3),
       st.sampled_from(["name", "kind", "spec", "metadata"]))
def test_duplicate_keys_anywhere_are_refused(docs, key):
    text = "\n---\n".join(dump(d) for d in docs)
    dup = f"{key}: a\n{key}: b\n"
    refused = refused_in_one_line(lambda: manifests.parse(dup + text, "m.yaml"), "m.yaml")
    assert refused is None

"""A small CDDL (RFC 8610) validator for the subset proto/PROTOCOL.md uses,
so that tests can check decoded messages against the document itself.

Supported: rules `name = type`; type choices `a / b`; integer literals and
ranges `a..b`; `uint int bool tstr bstr any true false`; controls `.size N`,
`.size (a..b)`, `.cbor rule`; maps `{ ? 1: type, * uint => any }`; arrays
`[ 1*4 type ]` and arrays of named members `[ name: type, ... ]`; tags
`#6.N(type)`; comments `; ...`. Anything else raises SyntaxError, so the
document cannot silently drift out of the subset.
"""
import re

import cbor2

TOKEN = re.compile(r"""
    (?P<ws>\s+|;[^\n]*)
  | (?P<tag>\#6\.(\d+))
  | (?P<occ>\d*\*\d*)
  | (?P<range>-?\d+\.\.-?\d+)
  | (?P<int>-?\d+)
  | (?P<ctl>\.(size|cbor))
  | (?P<id>[A-Za-z_$@][A-Za-z0-9_$@.-]*[A-Za-z0-9_$@]|[A-Za-z_$@])
  | (?P<op>=>|[=/{}\[\](),:?+])
""", re.X)


def tokenize(text):
    out, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise SyntaxError(f"cddl: cannot read {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "tag":
            out.append(("tag", int(m.group(3))))
        elif kind == "occ":
            lo, hi = m.group(0).split("*")
            out.append(("occ", (int(lo) if lo else 0,
                                int(hi) if hi else None)))
        elif kind == "range":
            a, b = m.group(0).split("..")
            out.append(("range", (int(a), int(b))))
        elif kind == "int":
            out.append(("int", int(m.group(0))))
        elif kind == "ctl":
            out.append(("ctl", m.group(0)))
        elif kind == "id":
            out.append(("id", m.group(0)))
        else:
            out.append(("op", m.group(0)))
    return out


class Parser:
    def __init__(self, toks):
        self.t, self.i = toks, 0

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else (None, None)

    def take(self, kind=None, val=None):
        tok = self.peek()
        if (kind and tok[0] != kind) or (val is not None and tok[1] != val):
            raise SyntaxError(f"cddl: expected {kind} {val}, got {tok}")
        self.i += 1
        return tok

    def rules(self):
        rules = {}
        while self.peek()[0] is not None:
            name = self.take("id")[1]
            self.take("op", "=")
            rules[name] = self.type()
        return rules

    def type(self):
        alts = [self.type1()]
        while self.peek() == ("op", "/"):
            self.take()
            alts.append(self.type1())
        return alts[0] if len(alts) == 1 else ("choice", alts)

    def type1(self):
        t = self.primary()
        while self.peek()[0] == "ctl":
            ctl = self.take()[1]
            arg = self.primary()
            t = ("ctl", ctl, t, arg)
        return t

    def primary(self):
        kind, val = self.peek()
        if kind == "int":
            self.take()
            return ("lit", val)
        if kind == "range":
            self.take()
            return ("range", val)
        if kind == "tag":
            self.take()
            self.take("op", "(")
            t = self.type()
            self.take("op", ")")
            return ("tag", val, t)
        if kind == "id":
            # A rule name followed by "=" starts the next rule.
            if self.peek(1) == ("op", "="):
                raise SyntaxError(f"cddl: missing type before {val}")
            self.take()
            return ("ref", val)
        if (kind, val) == ("op", "("):
            self.take()
            t = self.type()
            self.take("op", ")")
            return t
        if (kind, val) == ("op", "{"):
            self.take()
            return ("map", self.group("}"))
        if (kind, val) == ("op", "["):
            self.take()
            return ("array", self.group("]"))
        raise SyntaxError(f"cddl: unexpected {kind} {val}")

    def occur(self):
        kind, val = self.peek()
        if (kind, val) == ("op", "?"):
            self.take()
            return (0, 1)
        if (kind, val) == ("op", "+"):
            self.take()
            return (1, None)
        if kind == "occ":
            self.take()
            return val
        return (1, 1)

    def group(self, close):
        entries = []
        while self.peek() != ("op", close):
            occ = self.occur()
            key = None
            kind, val = self.peek()
            if self.peek(1) == ("op", ":") and kind in ("int", "id"):
                key = ("lit", val) if kind == "int" else ("name", val)
                self.take()
                self.take()
                t = self.type()
            else:
                t = self.type()
                if self.peek() == ("op", "=>"):
                    self.take()
                    key = ("type", t)
                    t = self.type()
            entries.append((occ, key, t))
            if self.peek() == ("op", ","):
                self.take()
        self.take("op", close)
        return entries


def parse(text):
    return Parser(tokenize(text)).rules()


def from_markdown(md):
    blocks = re.findall(r"```cddl\n(.*?)```", md, re.S)
    return parse("\n".join(blocks))


class Invalid(Exception):
    pass


def check(rules, t, v, where="$"):
    kind = t[0]
    if kind == "choice":
        errs = []
        for alt in t[1]:
            try:
                check(rules, alt, v, where)
                return
            except Invalid as e:
                errs.append(str(e))
        raise Invalid(f"{where}: no choice matches ({'; '.join(errs)})")
    if kind == "ref":
        name = t[1]
        prim = {
            "uint": lambda x: isinstance(x, int) and not isinstance(x, bool)
            and x >= 0,
            "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
            "bool": lambda x: isinstance(x, bool),
            "true": lambda x: x is True,
            "false": lambda x: x is False,
            "tstr": lambda x: isinstance(x, str),
            "bstr": lambda x: isinstance(x, bytes),
            "any": lambda x: True,
        }
        if name in prim:
            if not prim[name](v):
                raise Invalid(f"{where}: {v!r} is not {name}")
            return
        if name not in rules:
            raise Invalid(f"{where}: undefined rule {name}")
        check(rules, rules[name], v, f"{where}<{name}>")
        return
    if kind == "lit":
        if isinstance(v, bool) or v != t[1]:
            raise Invalid(f"{where}: {v!r} != {t[1]}")
        return
    if kind == "range":
        lo, hi = t[1]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise Invalid(f"{where}: {v!r} not in {lo}..{hi}")
        return
    if kind == "tag":
        if not isinstance(v, cbor2.CBORTag) or v.tag != t[1]:
            raise Invalid(f"{where}: not tag {t[1]}")
        check(rules, t[2], v.value, where)
        return
    if kind == "ctl":
        _, ctl, base, arg = t
        check(rules, base, v, where)
        if ctl == ".size":
            n = len(v)
            if arg[0] == "lit" and n != arg[1]:
                raise Invalid(f"{where}: size {n} != {arg[1]}")
            if arg[0] == "range" and not arg[1][0] <= n <= arg[1][1]:
                raise Invalid(f"{where}: size {n} not in {arg[1]}")
        elif ctl == ".cbor":
            check(rules, arg, cbor2.loads(v), f"{where}.cbor")
        return
    if kind == "map":
        return check_map(rules, t[1], v, where)
    if kind == "array":
        return check_array(rules, t[1], v, where)
    raise Invalid(f"{where}: cannot check {t}")


def matches(rules, t, v):
    try:
        check(rules, t, v)
        return True
    except Invalid:
        return False


def check_map(rules, entries, v, where):
    if not isinstance(v, dict):
        raise Invalid(f"{where}: not a map")
    left = dict(v)
    for (lo, hi), key, t in entries:
        if key[0] == "lit":
            if key[1] in left:
                check(rules, t, left.pop(key[1]), f"{where}[{key[1]}]")
            elif lo > 0:
                raise Invalid(f"{where}: key {key[1]} missing")
        elif key[0] == "type":
            for k in list(left):
                if matches(rules, key[1], k):
                    check(rules, t, left.pop(k), f"{where}[{k}]")
        else:
            raise Invalid(f"{where}: named member in a map")
    if left:
        raise Invalid(f"{where}: unexpected keys {sorted(left)}")


def check_array(rules, entries, v, where):
    if not isinstance(v, list):
        raise Invalid(f"{where}: not an array")
    i = 0
    for (lo, hi), _key, t in entries:
        n = 0
        while i < len(v) and (hi is None or n < hi) and \
                matches(rules, t, v[i]):
            i += 1
            n += 1
        if n < lo:
            if i < len(v):
                check(rules, t, v[i], f"{where}[{i}]")
            raise Invalid(f"{where}: {n} elements, want at least {lo}")
    if i != len(v):
        raise Invalid(f"{where}[{i}]: unexpected element {v[i]!r}")

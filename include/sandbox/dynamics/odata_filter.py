"""A small OData v4 ``$filter`` parser (recursive descent) with two back ends.

Why: the sandbox must answer the filters a Dataverse client really sends
(``modifiedon gt 2024-05-01T00:00:00Z``, ``_ownerid_value eq <guid>``, ``contains(lastname,'O''Neil')``,
``Microsoft.Dynamics.CRM.In(...)``) without ever loading a table into memory. ``parse`` builds an
AST; ``compile_sql`` turns it into a parameterised SQL WHERE fragment for the row store, and
``evaluate`` runs it over Python dicts for the small in-memory metadata collections
(EntityDefinitions, Attributes), so one grammar serves both.

Grammar::

    expr    := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | compare
    compare := primary (('eq'|'ne'|'gt'|'ge'|'lt'|'le') primary)?
    primary := '(' expr ')' | function '(' args ')' | literal | property ('/' property)* | @alias
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class FilterError(ValueError):
    """The filter cannot be parsed or does not fit the entity; message is the OData-style text."""


# ------------------------------------------------------------------------------------------ AST
@dataclass(frozen=True)
class Literal:
    value: Any
    kind: str  # string, number, bool, null, guid, datetime, date, enum


@dataclass(frozen=True)
class Prop:
    path: str


@dataclass(frozen=True)
class Compare:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Logical:
    op: str  # and / or
    left: Any
    right: Any


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class CrmCall:
    name: str
    params: dict[str, Any] = field(hash=False)


COMPARE_OPS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
OP_KIND_NAMES = {
    "eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
    "lt": "LessThan", "le": "LessThanOrEqual",
}
STRING_FUNCTIONS = ("contains", "startswith", "endswith")
CRM_PREFIX = "Microsoft.Dynamics.CRM."

# ------------------------------------------------------------------------------------ tokenizer
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<typed>[A-Za-z_][\w.]*'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w:]))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?)
  | (?P<alias>@\w+)
  | (?P<ident>[A-Za-z_$][\w.]*)
  | (?P<punct>[(),/\[\]=])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise FilterError(f"Syntax error: character '{text[pos]}' is not valid at position {pos} in '{text}'.")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    return tokens


def parse_datetime(text: str) -> dt.datetime:
    """Parse an OData DateTimeOffset/Date literal into an aware UTC datetime."""
    s = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    m = re.match(r"^(.*T\d{2}:\d{2}(?::\d{2})?)(\.\d+)?(.*)$", s)
    if m and m.group(2):  # fromisoformat in 3.11 wants 3 or 6 fraction digits
        frac = (m.group(2)[1:] + "000000")[:6]
        s = f"{m.group(1)}.{frac}{m.group(3)}"
    value = dt.datetime.fromisoformat(s)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def format_datetime(value: dt.datetime) -> str:
    """Dataverse wire/storage form: UTC, second precision, ``Z`` suffix."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str, aliases: Mapping[str, str] | None = None) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.aliases = aliases or {}

    def error(self, token: Token | None = None) -> FilterError:
        pos = token.pos if token else len(self.text)
        return FilterError(f"Syntax error at position {pos} in '{self.text}'.")

    def peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.error()
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.peek()
        if tok is None or tok.text != text:
            raise self.error(tok)
        self.i += 1
        return tok

    def at_word(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "ident" and tok.text == word

    def parse(self) -> Any:
        if not self.tokens:
            raise FilterError(f"Syntax error at position 0 in '{self.text}'.")
        node = self.parse_or()
        if self.peek() is not None:
            raise self.error(self.peek())
        return node

    def parse_or(self) -> Any:
        node = self.parse_and()
        while self.at_word("or"):
            self.take()
            node = Logical("or", node, self.parse_and())
        return node

    def parse_and(self) -> Any:
        node = self.parse_unary()
        while self.at_word("and"):
            self.take()
            node = Logical("and", node, self.parse_unary())
        return node

    def parse_unary(self) -> Any:
        if self.at_word("not"):
            self.take()
            return Not(self.parse_unary())
        return self.parse_compare()

    def parse_compare(self) -> Any:
        left = self.parse_primary()
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text in COMPARE_OPS:
            self.take()
            return Compare(tok.text, left, self.parse_primary())
        if tok is not None and tok.kind == "ident" and tok.text in ("has", "in", "add", "sub", "mul", "div", "mod"):
            raise FilterError(f"The operator '{tok.text}' is not supported.")
        return left

    def parse_primary(self) -> Any:
        tok = self.take()
        if tok.text == "(":
            node = self.parse_or()
            self.expect(")")
            return node
        if tok.kind == "string":
            return Literal(tok.text[1:-1].replace("''", "'"), "string")
        if tok.kind == "typed":
            quote = tok.text.index("'")
            return Literal(tok.text[quote + 1:-1].replace("''", "'"), "enum")
        if tok.kind == "guid":
            return Literal(tok.text.lower(), "guid")
        if tok.kind in ("datetime", "date"):
            try:
                return Literal(parse_datetime(tok.text), tok.kind)
            except ValueError:
                raise FilterError(
                    f"The DateTimeOffset text '{tok.text}' should be in format "
                    "'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range."
                ) from None
        if tok.kind == "number":
            raw = tok.text.rstrip("mMdDfFlL")
            value: int | float = float(raw) if any(c in raw for c in ".eE") else int(raw)
            return Literal(value, "number")
        if tok.kind == "alias":
            raw = self.aliases.get(tok.text)
            if raw is None:
                return Literal(None, "null")
            sub = _Parser(raw, {})
            node = sub.parse_primary()
            if sub.peek() is not None:
                raise sub.error(sub.peek())
            return node
        if tok.kind == "ident":
            if tok.text == "null":
                return Literal(None, "null")
            if tok.text in ("true", "false"):
                return Literal(tok.text == "true", "bool")
            nxt = self.peek()
            if nxt is not None and nxt.text == "(":
                return self.parse_call(tok)
            path = [tok.text]
            while self.peek() is not None and self.peek().text == "/":  # type: ignore[union-attr]
                self.take()
                part = self.take()
                if part.kind != "ident":
                    raise self.error(part)
                if self.peek() is not None and self.peek().text == "(":  # type: ignore[union-attr]
                    raise FilterError(f"The lambda or function '{part.text}' on a navigation path is not supported.")
                path.append(part.text)
            return Prop("/".join(path))
        raise self.error(tok)

    def parse_call(self, name_tok: Token) -> Any:
        name = name_tok.text
        self.expect("(")
        if name.startswith(CRM_PREFIX):
            params: dict[str, Any] = {}
            while self.peek() is not None and self.peek().text != ")":  # type: ignore[union-attr]
                key = self.take()
                if key.kind != "ident":
                    raise self.error(key)
                self.expect("=")
                if self.peek() is not None and self.peek().text == "[":  # type: ignore[union-attr]
                    self.take()
                    items = []
                    while self.peek() is not None and self.peek().text != "]":  # type: ignore[union-attr]
                        items.append(self.parse_primary())
                        if self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                            self.take()
                    self.expect("]")
                    params[key.text] = items
                else:
                    params[key.text] = self.parse_primary()
                if self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                    self.take()
            self.expect(")")
            return CrmCall(name[len(CRM_PREFIX):], params)
        if name not in STRING_FUNCTIONS:
            raise FilterError(
                f"An unknown function with name '{name}' was found. This may also be a function import or a key "
                "lookup on a navigation property, which is not allowed."
            )
        args = [self.parse_or()]
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.take()
            args.append(self.parse_or())
        self.expect(")")
        if len(args) != 2:
            raise FilterError(f"The function '{name}' requires 2 arguments.")
        return Call(name, tuple(args))


def parse(text: str, aliases: Mapping[str, str] | None = None) -> Any:
    """Parse ``$filter`` text (with optional ``@alias`` values) into an AST."""
    return _Parser(text, aliases).parse()


# ----------------------------------------------------------------------------------- SQL back end
@dataclass(frozen=True)
class ColumnRef:
    """What the SQL compiler needs to know about a filterable property."""

    sql: str  # quoted column expression
    kind: str  # string, number, bool, guid, datetime
    edm: str  # Edm type name for error messages


_LITERAL_EDM = {
    "string": "Edm.String", "number": "Edm.Int32", "bool": "Edm.Boolean", "guid": "Edm.Guid",
    "datetime": "Edm.DateTimeOffset", "date": "Edm.Date", "enum": "Edm.String",
}


def _compatible(a: str, b: str) -> bool:
    if a == b:
        return True
    dates = {"datetime", "date"}
    return (a in dates and b in dates) or {a, b} == {"string", "enum"}


class SqlCompiler:
    """Compile an AST to ``(sql, params)`` for one table."""

    def __init__(self, resolve: Callable[[str], ColumnRef], caller_id: str | None = None,
                 now: dt.datetime | None = None, resolve_logical: Callable[[str], ColumnRef] | None = None) -> None:
        self.resolve = resolve
        # Query functions name columns by logical name (PropertyName='ownerid'), not by _ownerid_value.
        self.resolve_logical = resolve_logical or resolve
        self.caller_id = caller_id
        self.now = now or dt.datetime.now(dt.UTC)
        self.params: list[Any] = []

    def compile(self, node: Any) -> tuple[str, list[Any]]:
        self.params = []
        sql = self._node(node)
        return sql, self.params

    def _value(self, lit: Literal) -> Any:
        if lit.kind in ("datetime", "date"):
            return format_datetime(lit.value)
        if lit.kind == "bool":
            return 1 if lit.value else 0
        return lit.value

    def _operand(self, node: Any) -> tuple[str, str, str]:
        """Return (sql, kind, edm); literals become parameters."""
        if isinstance(node, Prop):
            ref = self.resolve(node.path)
            return ref.sql, ref.kind, ref.edm
        if isinstance(node, Literal):
            if node.kind == "null":
                return "NULL", "null", "null"
            self.params.append(self._value(node))
            edm = _LITERAL_EDM[node.kind]
            if node.kind == "number" and isinstance(node.value, float):
                edm = "Edm.Double"
            return "?", "enum" if node.kind == "enum" else ("datetime" if node.kind == "date" else node.kind), edm
        raise FilterError("Only properties and literals can be compared.")

    def _node(self, node: Any) -> str:
        if isinstance(node, Logical):
            return f"({self._node(node.left)} {node.op.upper()} {self._node(node.right)})"
        if isinstance(node, Not):
            return f"(NOT {self._node(node.operand)})"
        if isinstance(node, Compare):
            return self._compare(node)
        if isinstance(node, Call):
            return self._call(node)
        if isinstance(node, CrmCall):
            return self._crm(node)
        if isinstance(node, Literal) and node.kind == "bool":
            return "1" if node.value else "0"
        if isinstance(node, Prop):
            ref = self.resolve(node.path)
            if ref.kind == "bool":
                return f"({ref.sql} = 1)"
        raise FilterError("The $filter expression must evaluate to a single boolean value.")

    def _compare(self, node: Compare) -> str:
        lsql, lkind, ledm = self._operand(node.left)
        rsql, rkind, redm = self._operand(node.right)
        if "null" in (lkind, rkind):
            other = rsql if lkind == "null" else lsql
            if lkind == rkind:
                return "1" if node.op in ("eq", "le", "ge") else "0"
            if node.op == "eq":
                return f"({other} IS NULL)"
            if node.op == "ne":
                return f"({other} IS NOT NULL)"
            return "0"
        if not _compatible(lkind, rkind):
            raise FilterError(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{ledm}' and '{redm}' for operator kind '{OP_KIND_NAMES[node.op]}'."
            )
        return f"({lsql} {COMPARE_OPS[node.op]} {rsql})"

    def _call(self, node: Call) -> str:
        target, needle = node.args
        if not isinstance(target, Prop) or not isinstance(needle, Literal) or needle.kind != "string":
            raise FilterError(f"The '{node.name}' function needs a string property and a string literal.")
        ref = self.resolve(target.path)
        if ref.kind != "string":
            raise FilterError(
                f"No function signature for the function with name '{node.name}' matches the specified arguments. "
                f"The function signatures considered are: {node.name}(Edm.String Nullable=true, Edm.String).")
        escaped = needle.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = {"contains": f"%{escaped}%", "startswith": f"{escaped}%", "endswith": f"%{escaped}"}[node.name]
        self.params.append(pattern)
        return f"({ref.sql} LIKE ? ESCAPE '\\')"

    def _convert(self, ref: ColumnRef, lit: Any) -> Any:
        if not isinstance(lit, Literal):
            raise FilterError("Query function parameters must be literals.")
        value = lit.value
        try:
            if ref.kind == "number":
                return float(value) if isinstance(value, str) and "." in value else int(float(value))
            if ref.kind == "datetime":
                return format_datetime(value if isinstance(value, dt.datetime) else parse_datetime(str(value)))
            if ref.kind == "guid":
                return str(value).lower()
            if ref.kind == "bool":
                return 1 if str(value).lower() in ("true", "1") else 0
        except (TypeError, ValueError):
            raise FilterError(f"The value '{value}' is not valid for a column of type '{ref.edm}'.") from None
        return value

    def _crm(self, node: CrmCall) -> str:
        name, params = node.name, node.params
        prop = params.get("PropertyName")
        if not isinstance(prop, Literal) or not isinstance(prop.value, str):
            raise FilterError(f"The function 'Microsoft.Dynamics.CRM.{name}' requires the parameter 'PropertyName'.")
        ref = self.resolve_logical(prop.value)

        def values() -> list[Any]:
            items = params.get("PropertyValues")
            if not isinstance(items, list) or not items:
                raise FilterError(f"The function 'Microsoft.Dynamics.CRM.{name}' requires 'PropertyValues'.")
            return [self._convert(ref, item) for item in items]

        def value() -> Any:
            if "PropertyValue" not in params:
                raise FilterError(f"The function 'Microsoft.Dynamics.CRM.{name}' requires 'PropertyValue'.")
            return self._convert(ref, params["PropertyValue"])

        def day(offset_days: int = 0, base: dt.datetime | None = None) -> str:
            start = (base or self.now).astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            return format_datetime(start + dt.timedelta(days=offset_days))

        if name in ("In", "NotIn"):
            vals = values()
            self.params.extend(vals)
            marks = ",".join("?" * len(vals))
            return f"({ref.sql} {'NOT IN' if name == 'NotIn' else 'IN'} ({marks}))"
        if name in ("Between", "NotBetween"):
            vals = values()
            if len(vals) != 2:
                raise FilterError(f"The function 'Microsoft.Dynamics.CRM.{name}' requires two values.")
            self.params.extend(vals)
            return f"({ref.sql} {'NOT BETWEEN' if name == 'NotBetween' else 'BETWEEN'} ? AND ?)"
        if name in ("On", "OnOrAfter", "OnOrBefore"):
            base = parse_datetime(str(value()).replace("Z", "")[:10])
            if name == "OnOrAfter":
                self.params.append(day(0, base))
                return f"({ref.sql} >= ?)"
            if name == "OnOrBefore":
                self.params.append(day(1, base))
                return f"({ref.sql} < ?)"
            self.params.extend([day(0, base), day(1, base)])
            return f"({ref.sql} >= ? AND {ref.sql} < ?)"
        if name in ("LastXHours", "LastXDays", "LastXMinutes"):
            n = int(params["PropertyValue"].value) if isinstance(params.get("PropertyValue"), Literal) else 0
            if name == "LastXDays":
                start = day(-n)
            else:
                delta = dt.timedelta(hours=n) if name == "LastXHours" else dt.timedelta(minutes=n)
                start = format_datetime(self.now - delta)
            self.params.extend([start, format_datetime(self.now)])
            return f"({ref.sql} >= ? AND {ref.sql} <= ?)"
        if name in ("EqualUserId", "NotEqualUserId"):
            self.params.append(self.caller_id)
            return f"({ref.sql} {'=' if name == 'EqualUserId' else '!='} ?)"
        raise FilterError(
            f"An unknown function with name 'Microsoft.Dynamics.CRM.{name}' was found. This may also be a function "
            "import or a key lookup on a navigation property, which is not allowed."
        )


# -------------------------------------------------------------------------------- Python back end
def _norm(value: Any) -> Any:
    if isinstance(value, Literal):
        value = value.value
    if isinstance(value, str):
        return value.lower()
    return value


def evaluate(node: Any, get: Callable[[str], Any]) -> Any:
    """Evaluate an AST against one record; ``get(path)`` returns a property value."""
    if isinstance(node, Logical):
        left = bool(evaluate(node.left, get))
        if node.op == "and":
            return left and bool(evaluate(node.right, get))
        return left or bool(evaluate(node.right, get))
    if isinstance(node, Not):
        return not evaluate(node.operand, get)
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Prop):
        return get(node.path)
    if isinstance(node, Compare):
        left, right = _norm(evaluate(node.left, get)), _norm(evaluate(node.right, get))
        if node.op == "eq":
            return left == right
        if node.op == "ne":
            return left != right
        if left is None or right is None:
            return False
        try:
            return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[node.op]
        except TypeError:
            return False
    if isinstance(node, Call):
        hay, needle = evaluate(node.args[0], get), evaluate(node.args[1], get)
        if not isinstance(hay, str) or not isinstance(needle, str):
            return False
        hay, needle = hay.lower(), needle.lower()
        return {"contains": needle in hay, "startswith": hay.startswith(needle),
                "endswith": hay.endswith(needle)}[node.name]
    if isinstance(node, CrmCall) and node.name in ("In", "NotIn"):
        prop = node.params.get("PropertyName")
        items = node.params.get("PropertyValues") or []
        value = _norm(get(prop.value)) if isinstance(prop, Literal) else None
        found = value in {_norm(i) for i in items}
        return found if node.name == "In" else not found
    raise FilterError("This filter expression is not supported on metadata queries.")

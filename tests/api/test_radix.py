"""Tests for aioserve.radix: the route tree used by the app layer on every request."""

import uuid

import pytest

from aioserve import radix
from aioserve.radix import Endpoint, RadixTree, RouteError, parse_pattern, register_converter


def tree_with(*patterns, methods=("GET",)):
    """A tree where each pattern's route object is the pattern itself."""
    tree = RadixTree()
    for pattern in patterns:
        tree.add(pattern, methods, pattern)
    return tree


def matched(tree, path):
    """(pattern of the GET route, values) for path, or None."""
    result = tree.match(path)
    if result is None:
        return None
    endpoint, values = result
    route, _names = endpoint.handlers["GET"]
    return route, list(values)


# --- static paths ----------------------------------------------------------------


def test_static_match_and_root():
    tree = tree_with("/", "/about", "/a/b/c")
    assert matched(tree, "/") == ("/", [])
    assert matched(tree, "/about") == ("/about", [])
    assert matched(tree, "/a/b/c") == ("/a/b/c", [])
    assert tree.match("/a/b") is None


def test_trailing_slash_is_significant():
    tree = tree_with("/a", "/b/", "/p/{x}", "/q/{x}/")
    assert matched(tree, "/a") == ("/a", [])
    assert tree.match("/a/") is None
    assert matched(tree, "/b/") == ("/b/", [])
    assert tree.match("/b") is None
    assert matched(tree, "/p/1") == ("/p/{x}", ["1"])
    assert tree.match("/p/1/") is None
    assert matched(tree, "/q/1/") == ("/q/{x}/", ["1"])
    assert tree.match("/q/1") is None


def test_not_found_returns_none():
    tree = tree_with("/users", "/users/{id:int}")
    assert tree.match("/nope") is None
    assert tree.match("/users/abc") is None
    assert tree.match("/users/1/extra") is None
    assert tree.match("users") is None  # no leading slash
    assert tree.match("") is None
    assert RadixTree().match("/") is None


# --- converters ------------------------------------------------------------------


def test_str_converter_matches_one_nonempty_segment():
    tree = tree_with("/u/{name}", "/v/{name:str}")
    assert matched(tree, "/u/alice") == ("/u/{name}", ["alice"])
    assert matched(tree, "/v/a.b-c~d") == ("/v/{name:str}", ["a.b-c~d"])
    assert tree.match("/u/") is None  # empty segment
    assert tree.match("/u/a/b") is None  # does not cross "/"


def test_int_converter():
    tree = tree_with("/n/{x:int}")
    endpoint, values = tree.match("/n/42")
    assert values == (42,) and type(values[0]) is int
    assert tree.match("/n/007")[1] == (7,)
    for bad in ("/n/4x", "/n/-1", "/n/1.5", "/n/", "/n/+3", "/n/\u00b2", "/n/\u0663"):
        assert tree.match(bad) is None, bad


def test_int_converter_rejects_absurdly_long_numbers_instead_of_crashing():
    tree = tree_with("/n/{x:int}")
    assert tree.match("/n/" + "9" * 10_000) is None  # int() raises ValueError past the digit limit


def test_float_converter():
    tree = tree_with("/f/{x:float}")
    assert tree.match("/f/1.5")[1] == (1.5,)
    values = tree.match("/f/2")[1]
    assert values == (2.0,) and type(values[0]) is float
    for bad in ("/f/1.", "/f/.5", "/f/1e3", "/f/nan", "/f/inf", "/f/-1.0", "/f/1.2.3", "/f/"):
        assert tree.match(bad) is None, bad


def test_uuid_converter():
    tree = tree_with("/o/{oid:uuid}")
    value = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    assert tree.match("/o/12345678-9abc-def0-1234-56789abcdef0")[1] == (value,)
    upper = tree.match("/o/12345678-9ABC-DEF0-1234-56789ABCDEF0")[1]
    assert upper == (value,) and isinstance(upper[0], uuid.UUID)
    for bad in (
        "/o/123456789abcdef0123456789abcdef0",  # no hyphens
        "/o/12345678-9abc-def0-1234-56789abcdef",  # too short
        "/o/12345678-9abc-def0-1234-56789abcdefg",  # not hex
        "/o/{12345678-9abc-def0-1234-56789abcdef0}",
    ):
        assert tree.match(bad) is None, bad


def test_path_converter_takes_the_rest_including_slashes():
    tree = tree_with("/files/{rest:path}", "/{all:path}")
    assert matched(tree, "/files/a/b/c.txt") == ("/files/{rest:path}", ["a/b/c.txt"])
    assert matched(tree, "/files/a/") == ("/files/{rest:path}", ["a/"])
    assert matched(tree, "/files/") == ("/files/{rest:path}", [""])
    # "/files" has no segment after "files", so only the catch-all matches it.
    assert matched(tree, "/files") == ("/{all:path}", ["files"])
    assert matched(tree, "/") == ("/{all:path}", [""])


def test_path_converter_after_other_params():
    tree = tree_with("/{user}/{n:int}/{rest:path}")
    assert matched(tree, "/bob/3/x/y") == ("/{user}/{n:int}/{rest:path}", ["bob", 3, "x/y"])


def test_multiple_params_in_pattern_order():
    tree = RadixTree()
    endpoint = tree.add("/u/{uid:int}/posts/{slug}/v/{ver:float}", ["GET"], "r")
    assert tree.match("/u/7/posts/hello/v/1.25") == (endpoint, (7, "hello", 1.25))
    assert endpoint.handlers["GET"] == ("r", ("uid", "slug", "ver"))


# --- precedence and backtracking -------------------------------------------------


def test_static_beats_parameter_regardless_of_order():
    tree = tree_with("/users/{name}", "/users/me", "/{a}/{b}")
    assert matched(tree, "/users/me") == ("/users/me", [])
    assert matched(tree, "/users/bob") == ("/users/{name}", ["bob"])
    assert matched(tree, "/x/y") == ("/{a}/{b}", ["x", "y"])


def test_static_prefix_beats_parameter_deeper_in_tree():
    tree = tree_with("/{kind}/{id:int}", "/users/{id:int}")
    assert matched(tree, "/users/1") == ("/users/{id:int}", [1])
    assert matched(tree, "/teams/1") == ("/{kind}/{id:int}", ["teams", 1])


def test_converter_priority_int_float_uuid_str():
    tree = tree_with("/x/{s}", "/x/{u:uuid}", "/x/{f:float}", "/x/{i:int}")  # registered worst-first
    assert matched(tree, "/x/5") == ("/x/{i:int}", [5])
    assert matched(tree, "/x/5.5") == ("/x/{f:float}", [5.5])
    u = "12345678-9abc-def0-1234-56789abcdef0"
    assert matched(tree, f"/x/{u}") == ("/x/{u:uuid}", [uuid.UUID(u)])
    assert matched(tree, "/x/word") == ("/x/{s}", ["word"])


def test_str_beats_path():
    tree = tree_with("/{rest:path}", "/{one}")
    assert matched(tree, "/a") == ("/{one}", ["a"])
    assert matched(tree, "/a/b") == ("/{rest:path}", ["a/b"])


def test_backtracking_to_lower_priority_branch():
    tree = tree_with("/a/{x:int}/b", "/a/{y}/c")
    assert matched(tree, "/a/1/c") == ("/a/{y}/c", ["1"])
    assert matched(tree, "/a/1/b") == ("/a/{x:int}/b", [1])
    assert tree.match("/a/1/d") is None


def test_backtracking_out_of_static_branch():
    tree = tree_with("/a/static/x", "/a/{p}/y", "/a/{p}/{rest:path}")
    assert matched(tree, "/a/static/y") == ("/a/{p}/y", ["static"])
    assert matched(tree, "/a/static/z/w") == ("/a/{p}/{rest:path}", ["static", "z/w"])
    assert matched(tree, "/a/static/x") == ("/a/static/x", [])


def test_failed_branch_leaves_no_stale_values():
    tree = tree_with("/{a:int}/{b:int}/z", "/{c}/{d}/{e}")
    assert matched(tree, "/1/2/q") == ("/{c}/{d}/{e}", ["1", "2", "q"])


# --- pattern validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, fragment",
    [
        ("users", "must start with '/'"),
        ("", "must start with '/'"),
        ("/x/{id:bogus}", "unknown converter 'bogus'"),
        ("/x/{id:}", "unknown converter ''"),
        ("/x/{id", "braces"),
        ("/x/id}", "braces"),
        ("/x/{{id}}", "braces"),
        ("/files/{name}.txt", "whole segment"),
        ("/files/pre{name}", "whole segment"),
        ("/x/{1abc}", "identifier"),
        ("/x/{}", "identifier"),
        ("/x/{a-b}", "identifier"),
        ("/x/{a b}", "identifier"),
        ("/x/{id}/{id:int}", "appears twice"),
        ("/x/{rest:path}/more", "last segment"),
        ("/x/{rest:path}/", "last segment"),
    ],
)
def test_bad_patterns_raise_one_line_route_error(pattern, fragment):
    with pytest.raises(RouteError) as info:
        parse_pattern(pattern)
    message = str(info.value)
    assert repr(pattern) in message
    assert fragment in message
    assert "\n" not in message
    with pytest.raises(RouteError):
        RadixTree().add(pattern, ["GET"], None)


def test_route_error_is_a_value_error():
    assert issubclass(RouteError, ValueError)


def test_parse_pattern_returns_shape_and_names():
    assert parse_pattern("/") == (("",), ())
    assert parse_pattern("/a/") == (("a", ""), ())
    assert parse_pattern("/a/b") == (("a", "b"), ())
    assert parse_pattern("/a/{x}/{y:int}/{z:path}") == (("a", "{str}", "{int}", "{path}"), ("x", "y", "z"))
    # Names don't affect the shape, and "{x}" is the same as "{x:str}".
    assert parse_pattern("/i/{item_id}")[0] == parse_pattern("/i/{id:str}")[0]
    assert parse_pattern("/i/{id:int}")[0] != parse_pattern("/i/{id}")[0]


def test_bad_methods_raise():
    tree = RadixTree()
    with pytest.raises(RouteError, match="/x"):
        tree.add("/x", [], None)
    with pytest.raises(RouteError, match="/x"):
        tree.add("/x", [""], None)
    assert len(tree) == 0 and tree.match("/x") is None


# --- registration: conflicts, merging, Allow -------------------------------------


def test_conflict_names_both_patterns_and_method():
    tree = RadixTree()
    tree.add("/items/{id}", ["GET"], "first")
    with pytest.raises(RouteError) as info:
        tree.add("/items/{item_id}", ["get"], "second")
    message = str(info.value)
    assert message == "route GET /items/{item_id} conflicts with GET /items/{id}: they match exactly the same paths"


def test_conflict_reports_the_pattern_that_owns_the_method():
    tree = RadixTree()
    tree.add("/items/{a}", ["GET"], 1)
    tree.add("/items/{b}", ["POST"], 2)
    with pytest.raises(RouteError) as info:
        tree.add("/items/{c}", ["POST"], 3)
    assert "POST /items/{c}" in str(info.value) and "POST /items/{b}" in str(info.value)


def test_exact_duplicate_static_route_conflicts():
    tree = tree_with("/health")
    with pytest.raises(RouteError, match="/health.*conflicts with GET /health"):
        tree.add("/health", ["GET"], "again")


def test_conflicting_add_changes_nothing():
    tree = RadixTree()
    endpoint = tree.add("/a/{x}", ["GET", "POST"], "one")
    with pytest.raises(RouteError):
        tree.add("/a/{y}", ["PUT", "POST"], "two")
    assert set(endpoint.handlers) == {"GET", "POST"}
    assert endpoint.allow == "GET, HEAD, POST"
    assert len(tree) == 2


def test_different_converters_are_different_shapes():
    tree = RadixTree()
    e1 = tree.add("/a/{x:int}", ["GET"], "int")
    e2 = tree.add("/a/{x}", ["GET"], "str")
    assert e1 is not e2
    assert len(tree.endpoints()) == 2


def test_same_shape_different_methods_merge():
    tree = RadixTree()
    e1 = tree.add("/items/{id:int}", ["get"], "show")
    e2 = tree.add("/items/{item_id:int}", ["POST", "delete"], "change")
    assert e1 is e2
    assert e1.pattern == "/items/{id:int}"
    assert e1.handlers == {
        "GET": ("show", ("id",)),
        "POST": ("change", ("item_id",)),
        "DELETE": ("change", ("item_id",)),
    }
    assert e1.allow == "DELETE, GET, HEAD, POST"
    assert len(tree) == 3
    assert tree.endpoints() == [e1]
    assert tree.match("/items/9") == (e1, (9,))


def test_allow_adds_head_only_with_get_and_head_not_in_handlers():
    tree = RadixTree()
    post_only = tree.add("/p", ["POST"], None)
    assert post_only.allow == "POST"
    endpoint = tree.add("/g", ["GET"], None)
    assert endpoint.allow == "GET, HEAD"
    assert "HEAD" not in endpoint.handlers
    tree.add("/g", ["PUT"], None)
    assert endpoint.allow == "GET, HEAD, PUT"
    explicit = tree.add("/h", ["HEAD", "GET"], None)
    assert explicit.allow == "GET, HEAD"
    assert set(explicit.handlers) == {"GET", "HEAD"}


def test_string_method_is_one_method_and_duplicates_collapse():
    tree = RadixTree()
    endpoint = tree.add("/s", "get", None)
    assert set(endpoint.handlers) == {"GET"}
    endpoint = tree.add("/t", ["GET", "get"], None)
    assert set(endpoint.handlers) == {"GET"}
    assert len(tree) == 2


def test_len_and_endpoints_in_registration_order():
    tree = RadixTree()
    assert len(tree) == 0 and tree.endpoints() == []
    a = tree.add("/a", ["GET", "POST"], None)
    b = tree.add("/b/{x}", ["GET"], None)
    tree.add("/a", ["PUT"], None)
    assert len(tree) == 4
    assert tree.endpoints() == [a, b]
    assert all(isinstance(e, Endpoint) for e in tree.endpoints())


def test_endpoint_uses_slots():
    endpoint = RadixTree().add("/a", ["GET"], None)
    with pytest.raises(AttributeError):
        endpoint.extra = 1


# --- custom converters -----------------------------------------------------------


def test_custom_converter_registration_and_priority():
    register_converter("slugtest", r"[a-z0-9]+(?:-[a-z0-9]+)*", lambda s: s.replace("-", "_"))
    tree = tree_with("/b/{s}", "/b/{slug:slugtest}", "/b/{n:int}")
    assert matched(tree, "/b/hello-world") == ("/b/{slug:slugtest}", ["hello_world"])
    assert matched(tree, "/b/12") == ("/b/{n:int}", [12])  # int (10) before custom (50)
    assert matched(tree, "/b/Hello") == ("/b/{s}", ["Hello"])  # custom (50) before str (90)


def test_custom_converter_can_outrank_builtins():
    register_converter("evenfirst", "[0-9]+", int, priority=1)
    tree = tree_with("/e/{n:int}", "/e/{m:evenfirst}")
    assert matched(tree, "/e/4") == ("/e/{m:evenfirst}", [4])


def test_custom_converter_value_error_means_no_match():
    def even(text):
        value = int(text)
        if value % 2:
            raise ValueError("odd")
        return value

    register_converter("eventest", "[0-9]+", even)
    tree = tree_with("/n/{x:eventest}", "/n/{y}")
    assert matched(tree, "/n/4") == ("/n/{x:eventest}", [4])
    assert matched(tree, "/n/5") == ("/n/{y}", ["5"])


def test_bad_converter_registrations_raise():
    with pytest.raises(ValueError):
        register_converter("int", "[0-9]+", int)  # built-ins are fixed
    with pytest.raises(ValueError):
        register_converter("not valid", "x", str)
    with pytest.raises(ValueError):
        register_converter("badregex", "(", str)
    with pytest.raises(ValueError):
        register_converter("notcallable", "x", "str")
    with pytest.raises(RouteError, match="badregex"):
        parse_pattern("/{x:badregex}")


# --- scaling: cost depends on the path, not on the number of routes --------------


def _count_walks(monkeypatch):
    """Wrap the tree walker so each node visit is counted (recursion goes through the module global)."""
    calls = [0]
    original = radix._walk

    def counting(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(radix, "_walk", counting)
    return calls


def _big_tree(n):
    tree = RadixTree()
    for i in range(n):
        tree.add(f"/svc{i}/items/{{item_id:int}}", ["GET"], i)
        tree.add(f"/svc{i}/static", ["GET"], -i)
    tree.add("/{tenant}/items/{item_id:int}", ["GET"], "fallback")
    return tree


@pytest.fixture(scope="module")
def big_tree():
    return _big_tree(10_000)


def test_lookup_visits_same_number_of_nodes_for_10_and_10000_routes(monkeypatch, big_tree):
    small, big = _big_tree(10), big_tree
    calls = _count_walks(monkeypatch)

    visits = []
    for tree, last in ((small, 9), (big, 9_999)):
        calls[0] = 0
        assert matched(tree, f"/svc{last}/items/42") == (last, [42])
        visits.append(calls[0])
    assert visits[0] == visits[1]
    assert visits[1] <= 4  # root + one node per segment

    for tree in (small, big):
        calls[0] = 0
        assert matched(tree, "/other/items/7") == ("fallback", ["other", 7])
        assert calls[0] <= 4
        calls[0] = 0
        assert tree.match("/svc3/nothing/here") is None
        assert calls[0] <= 8


def test_static_paths_skip_the_tree(monkeypatch, big_tree):
    tree = big_tree
    calls = _count_walks(monkeypatch)
    assert matched(tree, "/svc5000/static") == (-5000, [])
    assert calls[0] == 0


def test_every_route_among_10000_matches_correctly(big_tree):
    tree = big_tree
    assert len(tree) == 20_001
    for i in range(0, 10_000, 97):
        assert matched(tree, f"/svc{i}/items/{i + 1}") == (i, [i + 1])
        assert matched(tree, f"/svc{i}/static") == (-i, [])
    assert tree.match("/svc10000/static") is None


# --- the lookup cache of parameterised paths -------------------------------------

def test_a_repeated_path_is_answered_from_the_cache(monkeypatch):
    tree = tree_with("/users/{id:int}")
    calls = _count_walks(monkeypatch)
    first = tree.match("/users/7")
    assert calls[0] == 1
    assert tree.match("/users/7") is first  # the same answer, without walking again
    assert calls[0] == 1
    assert tree.match("/users/8")[1] == (8,)
    assert calls[0] == 2


def test_the_cache_never_holds_unknown_or_long_paths():
    tree = tree_with("/files/{rest:path}")
    for i in range(50):
        assert tree.match(f"/nothing/{i}") is None
    long_path = "/files/" + "x" * radix.CACHE_PATH_LENGTH
    assert tree.match(long_path)[1] == ("x" * radix.CACHE_PATH_LENGTH,)
    assert len(tree._cache) == 0


def test_the_cache_stays_bounded_under_many_distinct_paths():
    tree = tree_with("/users/{id:int}")
    for i in range(radix.CACHE_ENTRIES * 3 + 5):
        assert tree.match(f"/users/{i}")[1] == (i,)
        assert len(tree._cache) <= radix.CACHE_ENTRIES


def test_adding_a_route_empties_the_cache_so_the_new_route_is_found():
    tree = tree_with("/{kind}/{id:int}")
    assert matched(tree, "/teams/5") == ("/{kind}/{id:int}", ["teams", 5])
    tree.add("/teams/{id:int}", ["GET"], "/teams/{id:int}")  # a static segment beats {kind}
    assert matched(tree, "/teams/5") == ("/teams/{id:int}", [5])


def test_values_of_custom_converters_are_never_shared_between_requests():
    register_converter("pair", "[0-9]+,[0-9]+", lambda s: [int(x) for x in s.split(",")])
    tree = tree_with("/p/{xy:pair}")
    first = tree.match("/p/1,2")[1]
    first[0].append(99)  # a handler mutating its (mutable) value
    assert tree.match("/p/1,2")[1] == ([1, 2],)


# --- the method: a later match that has it, and the Allow of every match ---------


def _tree(*registrations):
    """A tree from (pattern, methods) pairs; each route object is "METHODS pattern"."""
    tree = RadixTree()
    for pattern, methods in registrations:
        tree.add(pattern, methods, f"{'|'.join(methods)} {pattern}")
    return tree


def test_match_all_lists_every_match_in_match_order():
    tree = _tree(("/users/me", ["GET"]), ("/users/{uid:int}", ["PUT"]), ("/users/{name}", ["DELETE"]),
                 ("/users/{rest:path}", ["POST"]))
    found = [(e.pattern, v) for e, v in tree.match_all("/users/me")]
    assert found == [("/users/me", ()), ("/users/{name}", ("me",)), ("/users/{rest:path}", ("me",))]
    found = [(e.pattern, v) for e, v in tree.match_all("/users/7")]
    assert found == [("/users/{uid:int}", (7,)), ("/users/{name}", ("7",)), ("/users/{rest:path}", ("7",))]
    assert found[0] == (tree.match("/users/7")[0].pattern, tree.match("/users/7")[1])
    assert list(tree.match_all("/nothing")) == [] and list(tree.match_all("nothing")) == []


def test_match_method_finds_the_first_match_that_has_the_method():
    tree = _tree(("/users/me", ["GET"]), ("/users/{uid:int}", ["GET"]), ("/users/{name}", ["DELETE"]),
                 ("/a/{x}/b", ["GET"]), ("/a/{x:int}/{y}", ["POST"]))
    endpoint, values = tree.match_method("DELETE", "/users/me")
    assert endpoint.routes["DELETE"] == "DELETE /users/{name}" and values == ("me",)
    assert tree.match_method("DELETE", "/users/5")[1] == ("5",)
    assert tree.match_method("HEAD", "/users/5")[0].pattern == "/users/{uid:int}"  # HEAD with GET
    endpoint, values = tree.match_method("POST", "/a/3/b")  # backtracks out of the static "b"
    assert endpoint.pattern == "/a/{x:int}/{y}" and values == (3, "b")
    assert tree.match_method("PUT", "/users/me") is None
    assert tree.match_method("DELETE", "/nothing") is None


def test_allow_names_the_methods_of_every_match():
    tree = _tree(("/users/me", ["GET"]), ("/users/{name}", ["DELETE", "PATCH"]), ("/users/{n:int}", ["PUT"]))
    assert tree.allow("/users/me") == "DELETE, GET, HEAD, PATCH"
    assert tree.allow("/users/5") == "DELETE, PATCH, PUT"
    assert tree.allow("/users/x") == "DELETE, PATCH"
    assert tree.allow("/other") == ""


def test_match_method_answers_are_cached_bounded_and_dropped_when_a_route_is_added(monkeypatch):
    tree = _tree(("/items/{iid:int}", ["GET"]), ("/items/{name}", ["POST"]))
    first = tree.match_method("POST", "/items/5")
    assert first[1] == ("5",)
    assert tree.match_method("POST", "/items/5") is first
    assert tree.match_method("PUT", "/items/5") is None  # a miss is not cached
    assert len(tree._method_cache) == 1
    tree.add("/items/{n:float}", ["POST"], "POST /items/{n:float}")
    assert tree.match_method("POST", "/items/5")[1] == (5.0,)
    for i in range(radix.CACHE_ENTRIES * 2 + 3):
        assert tree.match_method("POST", f"/items/x{i}")[1] == (f"x{i}",)
        assert len(tree._method_cache) <= radix.CACHE_ENTRIES

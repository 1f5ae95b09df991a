#!/usr/bin/env python3
"""Doxygen's INPUT_FILTER for include/parjob.h: reads the header's plain C comments as doxygen
would read doc comments, so the header stays written for C readers and is the only copy of the
documentation.  Prints the filtered header on stdout, line for line (line numbers are kept).

The header's conventions, and what each becomes:
  - the comment that opens the file: the overview, group "parjob" (man page parjob(3));
  - a section banner (a line of dashes or equal signs, then title lines, then a blank line):
    a group of its own, in parjob (one man page per section: parjob_results(3), ...);
  - a comment immediately followed by a declaration: that declaration's documentation; of the
    declarations after it up to the next blank line, it also documents those without a
    comment of their own that it names (/* Typed readers... */ above pj_result_i64 ..
    pj_result_ptr; pj_start's names pj_next) — one that no comment names is left
    undocumented, and doxygen says so;
  - a comment that is only "name(...): see other above.": other's documentation, copied;
  - a comment followed by a blank line: more text for its section's page;
  - a comment after code on its line (a field, an enumerator): that member's documentation.
The HTML's front page (@mainpage) only points at the overview.
Names starting with PJ__ or pj__ are internal; the Doxyfile excludes them.
"""
import re
import sys

BANNER = re.compile(r"^/\* ?([-=])\1{20,} ?\*/\s*$")
TITLE = re.compile(r"^/\*\s*(.*?)\s*\*/\s*$")
CODE_COMMENT = re.compile(r"^(\s*\S.*?)/\*(?![*!])")
QUOTE = "\ue000"  # a private-use character: no comment holds it
SEE_ABOVE = re.compile(r"^/\*\s*[\w\s(),.]*:\s*see (\w+) above\.\s*\*/$", re.S)


def slug(title):
    words = re.findall(r"[a-z0-9]+", title.split(":")[0].lower().replace("'s", ""))
    return "parjob_" + "_".join(words)


def comment_end(lines, i):
    """Index of the line on which the comment opening on line i closes."""
    j = i
    while "*/" not in lines[j][lines[j].find("/*") + 2 if j == i else 0:]:
        j += 1
    return j


def declared_name(line):
    """The name a declaration line declares: the function or macro, else None."""
    m = re.match(r"\s*#\s*define\s+(\w+)", line)
    if m:
        return m.group(1)
    if "(" in line and "typedef" not in line:
        head = line.split("(", 1)[0]
        m = re.search(r"(\w+)\s*$", head)
        return m.group(1) if m else None
    return None


def declaration_block(lines, start):
    """The declarations from line start to the next blank line: for each, its first line and
    the text of the comment right above it ("" when none)."""
    decls, j, in_decl, in_macro, comment = [], start, False, False, ""
    while j < len(lines) and lines[j].strip():
        if not in_decl and not in_macro and lines[j].lstrip().startswith("/*"):
            end = comment_end(lines, j)
            comment = "\n".join(lines[j:end + 1])
            j = end + 1
            continue
        code = re.sub(r"/\*.*", "", lines[j]).rstrip()
        if not in_decl and not in_macro:
            decls.append((j, comment))
            comment = ""
            in_macro = code.lstrip().startswith("#")
        if in_macro:
            in_macro = code.endswith("\\")
        else:
            in_decl = not code.endswith((";", "}"))
        if code.endswith("{") and not code.lstrip().startswith("#"):
            break  # a struct or enum body: its members carry their own comments
        j += 1
    return decls


def overview(lines, out, i, state):
    """The file's opening comment, lines i..: the group "parjob", open until the first banner."""
    end = comment_end(lines, i)
    title = re.sub(r"^\s*\*\s*", "", lines[i + 1]).rstrip() if end > i else ""
    title = re.sub(r"^parjob\s*\W+\s*", "", title)  # "parjob — what it is"
    out[i] = "/** @defgroup parjob " + title
    out[i + 1] = " *"
    out[end] = out[end].replace("*/", "@{ */")
    state["group"] = "parjob"
    return end + 1


def section(lines, out, i, state):
    """A banner on line i and its title lines: closes the open group and opens the section's."""
    j, titles = i + 1, []
    while j < len(lines) and (TITLE.match(lines[j]) or BANNER.match(lines[j])):
        if not BANNER.match(lines[j]):
            titles.append(TITLE.match(lines[j]).group(1))
        j += 1
    title = " ".join(titles)
    name = slug(title)
    # Line for line: the banner opens the group, the line after it ends that comment.
    out[i] = ("/** @} */ " if state["group"] else "") + "/** @defgroup %s %s" % (name, title)
    for k in range(i + 1, j):
        out[k] = ""
    out[i + 1] = "    @ingroup parjob"
    if j < len(lines) and not lines[j].strip():
        out[j] = "    @{ */"
    else:
        out[i + 1] += "\n    @{ */"
    state["group"] = name
    return j


def comment(lines, out, i, state):
    """A comment opening line i: a declaration's documentation, or more text for the section."""
    end = comment_end(lines, i)
    text = "".join(lines[i:end + 1])
    nxt = end + 1
    if nxt < len(lines) and lines[nxt].strip() and not lines[nxt].lstrip().startswith("/*"):
        see = SEE_ABOVE.match(text.strip())
        if see:
            out[i] = "/** @copydoc %s */" % see.group(1)
            for k in range(i + 1, end + 1):
                out[k] = ""
        else:
            out[i] = lines[i].replace("/*", "/**", 1)
        name_them(lines, out, nxt, text)
    elif state["group"]:
        # Closed and opened again around the text, as doxygen will not add a group to itself;
        # "@addtogroup name" takes the rest of its line as a title.
        opener = "/** @} */ /** @addtogroup %s" % state["group"]
        if i > 0 and not lines[i - 1].strip() and not out[i - 1].strip():
            out[i - 1] = opener
            out[i] = lines[i].replace("/*", "  ", 1)
        else:
            out[i] = lines[i].replace("/*", opener + "\n", 1)
        out[end] = out[end][::-1].replace("/*", "/* {@", 1)[::-1]  # the last */ becomes @{ */
    return end + 1


def filter_header(lines):
    out = list(lines)
    state = {"group": None}
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if state["group"] is None and stripped.startswith("/*"):
            i = overview(lines, out, i, state)
        elif BANNER.match(lines[i]):
            i = section(lines, out, i, state)
        elif stripped.startswith("/*") and not stripped.startswith(("/**", "/*!")):
            i = comment(lines, out, i, state)
        else:
            if CODE_COMMENT.match(lines[i]) and not stripped.startswith("#"):
                out[i] = lines[i].replace("/*", "/**<", 1)  # after a field or an enumerator
            i += 1
    if state["group"]:
        out.append("/** @} */")
    # The HTML's front page points at the overview: a signpost, not a copy of it.
    out.append("/** @mainpage parjob\n The API of include/parjob.h, from its comments: the "
               "overview is @ref parjob; each section of the header is one of its modules. */")
    return out


def names(text, name):
    return bool(name) and re.search(r"\b%s\b" % re.escape(name), text) is not None


def name_them(lines, out, start, text):
    """Documents by the comment `text` above line start the declarations after the first, up to
    the next blank line, that have no comment of their own and that it names — unless a
    comment nearer to them names them too."""
    decls = declaration_block(lines, start)
    if not decls:
        return
    first = declared_name(lines[decls[0][0]])
    nearer = []
    for j, comment in decls[1:]:
        if comment:
            nearer.append(comment)
            continue
        name = declared_name(lines[j])
        if first and names(text, name) and not any(names(c, name) for c in nearer):
            out[j] = "/** @copydoc %s */ %s" % (first, out[j])


def mark_quotes(text):
    """Replaces each double quote inside a comment by QUOTE: doxygen's man pages print a double
    quote as a single one ("threading" would read 'threading'), so the build script puts
    the quotes back in the output (docs/build-reference.sh)."""
    out, i, state = [], 0, "code"
    while i < len(text):
        c, pair = text[i], text[i:i + 2]
        if state == "code":
            if pair == "/*":
                state, c = "comment", pair
            elif c in "\"'":
                state = c
        elif state == "comment":
            if pair == "*/":
                state, c = "code", pair
            elif c == '"':
                c = QUOTE
        elif pair in ("\\" + state, "\\\\"):
            c = pair
        elif c == state or c == "\n":
            state = "code"
        out.append(c)
        i += len(c)
    return "".join(out)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = f.readlines()
    lines = [l.rstrip("\n") for l in lines]
    sys.stdout.write(mark_quotes("\n".join(filter_header(lines)) + "\n"))


if __name__ == "__main__":
    main()

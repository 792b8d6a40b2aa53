// reprolog explorer: the pages work without this script; it only adds search as you type
// and reading an uploaded `nix path-info -r` output into the report form.
"use strict";

function element(tag, attributes, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes || {})) e.setAttribute(k, v);
  for (const c of children || []) e.append(c);
  return e;
}

function hashPart(storePath) {
  return storePath.split("/").pop().slice(0, 32);
}

function renderResults(results, query, answer) {
  results.replaceChildren();
  if (answer.paths.length === 0) {
    results.append(element("p", { class: "none" }, ["No store path matches."]));
    return;
  }
  const list = element("ul", { class: "results" });
  for (const p of answer.paths) {
    const link = element("a", { class: "path", href: "/paths/" + hashPart(p.store_path) }, [
      element("code", {}, [p.store_path]),
    ]);
    const verdict = element("span", { class: "verdict " + p.verdict }, [p.verdict]);
    list.append(element("li", {}, [link, " ", verdict]));
  }
  results.append(list);
  if (answer.next) {
    const more = new URL("/search", window.location.href);
    more.searchParams.set("q", query);
    more.searchParams.set("after", answer.next);
    results.append(element("p", {}, [element("a", { class: "more", rel: "next", href: more.pathname + more.search }, ["More results"])]));
  }
}

function searchAsYouType() {
  const input = document.getElementById("q");
  const results = document.getElementById("results");
  if (!input || !results) return;
  let timer = null;
  let latest = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = input.value.trim();
      const mine = ++latest;
      const url = new URL(window.location.href);
      if (q) url.searchParams.set("q", q); else url.searchParams.delete("q");
      history.replaceState(null, "", url);
      // One or two letters match too much to be worth asking as they are typed.
      if (q.length < 3) { results.replaceChildren(); return; }
      try {
        const response = await fetch("/api/v1/search?q=" + encodeURIComponent(q));
        const answer = await response.json();
        // An older answer arriving late must not replace a newer one.
        if (mine !== latest) return;
        if (!response.ok) {
          results.replaceChildren(element("p", { class: "error", role: "alert" }, [answer.error]));
          return;
        }
        renderResults(results, q, answer);
      } catch (e) {
        if (mine === latest) results.replaceChildren(element("p", { class: "error", role: "alert" }, [String(e)]));
      }
    }, 150);
  });
}

function reportUpload() {
  const file = document.getElementById("file");
  const paths = document.getElementById("paths");
  if (!file || !paths) return;
  document.getElementById("upload").hidden = false;
  file.addEventListener("change", async () => {
    if (file.files.length > 0) paths.value = await file.files[0].text();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  searchAsYouType();
  reportUpload();
});

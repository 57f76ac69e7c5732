"""A small automated accessibility check run inside a loaded page.

It checks what a machine can check reliably: the document has a `lang` and exactly one
`<main>`; every form control has a label (label[for], a wrapping label, aria-label or
aria-labelledby); every button and link has an accessible name; the page has a heading;
ids are unique; and the text colour of every visible text element has at least WCAG AA
contrast against its effective background (4.5:1, or 3:1 for large text). Keyboard use
is checked by the tests themselves (they tab to controls and press Enter).
"""

from typing import Any

CHECK_JS = r"""
() => {
  const problems = [];
  const doc = document.documentElement;
  if (!doc.getAttribute('lang')) problems.push('<html> has no lang');
  const mains = document.querySelectorAll('main');
  if (mains.length !== 1) problems.push(`expected one <main>, found ${mains.length}`);
  if (!document.querySelector('h1, h2')) problems.push('no h1/h2 heading');
  if (!document.title.trim()) problems.push('empty <title>');
  const ids = {};
  document.querySelectorAll('[id]').forEach(el => {
    if (ids[el.id]) problems.push(`duplicate id ${el.id}`);
    ids[el.id] = true;
  });
  const named = el => {
    if ((el.getAttribute('aria-label') || '').trim()) return true;
    const lb = el.getAttribute('aria-labelledby');
    if (lb && lb.split(/\s+/).every(id => document.getElementById(id))) return true;
    return false;
  };
  document.querySelectorAll('input, select, textarea').forEach(el => {
    if (el.type === 'hidden') return;
    const labelled = named(el) || el.closest('label') ||
      (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`));
    if (!labelled) problems.push(`unlabelled ${el.tagName.toLowerCase()} name=${el.name}`);
  });
  document.querySelectorAll('button, a[href]').forEach(el => {
    if (!(el.textContent.trim() || named(el) || el.getAttribute('title'))) {
      problems.push(`${el.tagName.toLowerCase()} without a name: ${el.outerHTML.slice(0, 80)}`);
    }
  });
  const parse = c => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(',').map(x => parseFloat(x));
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = c => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.backgroundImage && s.backgroundImage !== 'none') return null;  // gradient: skip
      const c = parse(s.backgroundColor);
      if (c && c.a > 0.9) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const el = node.parentElement;
    if (!el || seen.has(el)) continue;
    seen.add(el);
    const s = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (s.visibility === 'hidden' || s.display === 'none' || box.width < 2 || box.height < 2) continue;
    if (el.closest('.visually-hidden, [hidden], option')) continue;
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) opacity *= parseFloat(getComputedStyle(e).opacity);
    const fg = parse(s.color), bg = background(el);
    if (!fg || !bg || opacity < 0.99) continue;  // dimmed rows are deliberately faint
    const l1 = lum(fg), l2 = lum(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(s.fontSize), bold = parseInt(s.fontWeight, 10) >= 700;
    const need = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    if (ratio < need) {
      problems.push(`contrast ${ratio.toFixed(2)} < ${need} for "${node.textContent.trim().slice(0, 30)}" (${s.color} on rgb(${bg.r},${bg.g},${bg.b}))`);
    }
  }
  return problems;
}
"""


def accessibility_problems(page: Any) -> list[str]:
    return list(page.evaluate(CHECK_JS))


def assert_accessible(page: Any) -> None:
    problems = accessibility_problems(page)
    assert not problems, f"accessibility problems on {page.url}:\n" + "\n".join(problems)

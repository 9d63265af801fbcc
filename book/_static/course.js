/* The book's own behaviour: sidebar toggles that work, and a cue on boxes that scroll sideways. */

/* Sidebar toggles (pydata-sphinx-theme 0.17.1 with sphinx-book-theme 1.3.0, the versions constraints.txt pins).
   Both themes attach their ☰ and ☷ handlers to document.querySelector(".primary-toggle") and
   (".secondary-toggle"): the first such button in the page, a copy in the theme's top bar that is never shown. The
   buttons a reader sees, in the article header, get no handler: on a phone they open nothing, on a laptop ☰ does
   not collapse the chapter list. Here each other toggle hands its click to the wired one, so on a wide screen the
   book theme collapses or restores the sidebar and on a narrow one pydata opens its dialog. (A theme version that
   wires every button would open and close at once: tests/test_browser.py checks both widths.) */
document.addEventListener("DOMContentLoaded", () => {
  for (const kind of ["primary", "secondary"]) {
    const [wired, ...others] = document.querySelectorAll(`.${kind}-toggle`);
    for (const button of others) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        button.blur(); // no tooltip left standing after a tap
        wired.click();
      });
    }
  }
});

/* A box that scrolls sideways (a display equation, a printed output, code, a table) gets the classes
   course-more-left / course-more-right while there is more to see on that side; course.css fades that side out. */
const COURSE_SCROLL_BOXES = [
  "div.math mjx-container",
  "div.cell_output pre",
  "div.highlight pre",
  ".pst-scrollable-table-container",
].join(", ");

function courseMarkOverflow(box) {
  const hidden = box.scrollWidth - box.clientWidth;
  box.classList.toggle("course-more-right", hidden > 1 && box.scrollLeft < hidden - 1);
  box.classList.toggle("course-more-left", hidden > 1 && box.scrollLeft > 1);
}

function courseMarkAllOverflows() {
  document.querySelectorAll(COURSE_SCROLL_BOXES).forEach(courseMarkOverflow);
}

document.addEventListener(
  "scroll",
  (event) => {
    if (event.target instanceof Element && event.target.matches(COURSE_SCROLL_BOXES)) {
      courseMarkOverflow(event.target);
    }
  },
  true, // scroll events do not bubble
);
window.addEventListener("resize", courseMarkAllOverflows);
window.addEventListener("load", () => {
  courseMarkAllOverflows();
  document.fonts.ready.then(courseMarkAllOverflows);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(courseMarkAllOverflows); // equations have their width once typeset
  }
  // A folded solution or a dropdown opened later: its boxes get their width then.
  document.addEventListener("toggle", courseMarkAllOverflows, true);
  document.addEventListener("click", () => setTimeout(courseMarkAllOverflows, 50));
});

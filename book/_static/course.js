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
  "div.cell_output.course-figure-box",
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

/* Figures on a phone: the chapters draw figures about 7 inches wide at 100 dpi (about 700 px) with 9-10 pt text.
   Shrunk to a 360 px column that text would be 6-7 px high and unreadable. Below 576 px a figure that would shrink
   under COURSE_FIGURE_SCALE of its size keeps that scale instead; its output box scrolls sideways (with the fade
   cue) and the reader pans, or taps it to open the image alone. */
const COURSE_FIGURE_SCALE = 0.8;

function courseSizeFigures() {
  const phone = window.matchMedia("(max-width: 576px)").matches;
  document.querySelectorAll("div.cell_output img").forEach((img) => {
    const box = img.closest("div.cell_output");
    if (!box || img.closest("div.animation") || !img.naturalWidth) {
      return;
    }
    const keep = Math.round(img.naturalWidth * COURSE_FIGURE_SCALE);
    const enlarge = phone && keep > box.clientWidth;
    img.classList.toggle("course-figure-kept", enlarge);
    img.style.width = enlarge ? `${keep}px` : "";
    box.classList.toggle("course-figure-box", enlarge);
    if (enlarge && !img.dataset.courseZoom && !img.closest("a")) {
      img.dataset.courseZoom = "1";
      img.addEventListener("click", () => {
        if (img.classList.contains("course-figure-kept")) {
          window.open(img.src, "_blank");
        }
      });
    }
  });
  courseMarkAllOverflows();
}

window.addEventListener("resize", courseSizeFigures);
window.addEventListener("load", () => {
  courseSizeFigures();
  document.fonts.ready.then(courseMarkAllOverflows);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(courseMarkAllOverflows); // equations have their width once typeset
  }
  // A folded solution or a dropdown opened later: its boxes get their width then.
  document.addEventListener("toggle", courseMarkAllOverflows, true);
  document.addEventListener("click", () => setTimeout(courseMarkAllOverflows, 50));
});

// Tables that fit the page (with css/fit.css): table cells may wrap, so that a table of long text stays inside
// the column, but a short body cell (a number with its standard error, a method name, a flag) never breaks;
// headers still wrap. A numbers table that is still too wide scrolls sideways inside its own box instead.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".rst-content table td").forEach(function (cell) {
    if (cell.textContent.trim().length <= 16) {
      cell.classList.add("short-cell");
    }
  });
});

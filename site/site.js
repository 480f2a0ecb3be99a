// Sorting and filtering of the leaderboard tables; plain DOM, no framework, works from file://.
(function () {
  "use strict";

  function cellValue(row, index) {
    var cell = row.children[index];
    return cell ? cell.getAttribute("data-value") : "";
  }

  function compare(a, b, numeric) {
    if (a === "" && b === "") return 0;
    if (a === "") return 1; // empty cells last, whichever the direction
    if (b === "") return -1;
    if (numeric) return parseFloat(a) - parseFloat(b);
    return a.localeCompare(b);
  }

  function sortBy(header) {
    var table = header.closest("table");
    var index = Array.prototype.indexOf.call(header.parentNode.children, header);
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var numeric = header.getAttribute("data-sort") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var va = cellValue(a, index), vb = cellValue(b, index);
      if (va === "" || vb === "") return compare(va, vb, numeric);
      var order = compare(va, vb, numeric);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function applyFilters() {
    var wanted = {};
    document.querySelectorAll("select[data-filter]").forEach(function (select) {
      wanted[select.getAttribute("data-filter")] = select.value;
    });
    var shown = 0;
    document.querySelectorAll("section.board-section").forEach(function (section) {
      var sectionShown = !wanted.protocol || section.getAttribute("data-protocol") === wanted.protocol;
      section.hidden = !sectionShown;
      section.querySelectorAll("tbody tr").forEach(function (row) {
        var match = sectionShown && ["act", "init", "quant"].every(function (key) {
          return !wanted[key] || row.getAttribute("data-" + key) === wanted[key];
        });
        row.hidden = !match;
        if (match) shown += 1;
      });
    });
    var counter = document.getElementById("shown");
    if (counter) counter.textContent = shown + " row" + (shown === 1 ? "" : "s") + " shown";
  }

  document.querySelectorAll("th[data-sort]").forEach(function (header) {
    header.addEventListener("click", function () { sortBy(header); });
  });
  var selects = document.querySelectorAll("select[data-filter]");
  if (selects.length) {
    // ?act=golu&protocol=quick in the address preselects filters (links from other pages)
    var query = new URLSearchParams(window.location.search);
    selects.forEach(function (select) {
      var value = query.get(select.getAttribute("data-filter"));
      if (value !== null && Array.prototype.some.call(select.options, function (o) { return o.value === value; })) {
        select.value = value;
      }
      select.addEventListener("change", applyFilters);
    });
    applyFilters();
  }
})();

// Sortable tables: click (or Enter on) a column header to sort by it; again to reverse.
// Each cell carries its raw value in data-sort, so "1,234" and "12.5%" sort as numbers.
(function () {
  "use strict";
  function value(cell) {
    const raw = cell.dataset.sort ?? cell.textContent;
    const number = Number(raw);
    return raw !== "" && !Number.isNaN(number) ? number : raw.toLowerCase();
  }
  function compare(a, b) {
    if (a === b) return 0;
    if (a === "") return 1; // empty (no data) last
    if (b === "") return -1;
    if (typeof a === typeof b) return a < b ? -1 : 1;
    return typeof a === "number" ? -1 : 1;
  }
  function sortBy(table, header) {
    const index = Array.from(header.parentNode.children).indexOf(header);
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((r1, r2) => {
      const order = compare(value(r1.cells[index]), value(r2.cells[index]));
      return ascending ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  }
  document.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("th[tabindex]").forEach((header) => {
      header.addEventListener("click", () => sortBy(table, header));
      header.addEventListener("keydown", (event) => {
        if (event.key === "Enter") sortBy(table, header);
      });
    });
  });
})();

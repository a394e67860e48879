document.addEventListener("click", (event) => {
  if (event.target.closest("[data-back]") && window.history.length > 1) {
    event.preventDefault();
    window.history.back();
    return;
  }
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  const label = button.dataset.label || (button.dataset.label = button.textContent);
  const done = (shown) => { button.textContent = shown; setTimeout(() => { button.textContent = label; }, 4000); };
  if (navigator.clipboard) {
    navigator.clipboard.writeText(text).then(() => done("Copied"), () => done("Copy failed: select the text and copy it"));
  } else {
    done("Copying needs https: select the text and copy it");
  }
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// The live page of an API node: reads /ui/history once per connection,
// then follows /ui/events. No libraries: it must work offline.
(() => {
  'use strict';

  const MAX_ROWS = 100;
  const $ = (id) => document.getElementById(id);

  const state = {
    reasons: ['taken', 'confusable', 'reserved', 'invalid', 'request_conflict', 'not_holder', 'held', 'not_held', 'locked', 'policy_upgrading'],
    seconds: 900,
    end: 0,        // the unix second of the last count in every series
    counts: {},    // reason -> counts per second, oldest first
    seq: 0,        // the last rejection applied; events up to it are already counted
    offset: 0,     // server clock minus ours, in milliseconds
    loaded: false, // history applied for the current connection
    pending: [],   // events that arrived while the history loaded
  };

  // For the browser test and for operators at the console.
  window.rejectionsUI = {
    state,
    total: (reason) => (state.counts[reason] || []).reduce((a, b) => a + b, 0),
  };

  // --- connection -----------------------------------------------------------

  let generation = 0; // ignores history answers for a connection that is gone

  function connect() {
    const gen = ++generation;
    setConn('connecting', 'connecting…');
    const es = new EventSource('/ui/events');
    es.onopen = () => loadHistory(gen);
    es.addEventListener('rejection', (ev) => onRejection(JSON.parse(ev.data)));
    es.addEventListener('stats', (ev) => onStats(JSON.parse(ev.data)));
    es.onerror = () => {
      state.loaded = false;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gives up on an error status (a server shutting down
        // answers 503); keep trying, a restarted node will answer.
        setConn('offline', 'offline, retrying');
        setTimeout(connect, 3000);
      } else {
        setConn('reconnecting', 'reconnecting…');
      }
    };
  }

  // The stream subscribes before it answers, so once it is open the history
  // holds every rejection before the stream's first one: events with a seq
  // up to the history's are skipped, none are missed.
  async function loadHistory(gen) {
    state.loaded = false;
    state.pending = [];
    try {
      const res = await fetch('/ui/history', { cache: 'no-store' });
      if (!res.ok) throw new Error(`history: HTTP ${res.status}`);
      const h = await res.json();
      if (gen !== generation) return;
      applyHistory(h);
      state.loaded = true;
      state.pending.splice(0).forEach(onRejection);
      setConn('live', 'live');
      draw();
    } catch (err) {
      console.warn(err);
      if (gen === generation) setTimeout(() => loadHistory(gen), 2000);
    }
  }

  function setConn(s, text) {
    document.body.dataset.state = s;
    $('conn').textContent = text;
  }

  // --- data -----------------------------------------------------------------

  function applyHistory(h) {
    state.reasons = h.reasons;
    state.seconds = h.seconds;
    state.end = h.start + h.seconds - 1;
    state.offset = h.now - Date.now();
    state.seq = h.seq;
    for (const r of h.reasons) state.counts[r] = (h.counts[r] || []).slice();
    $('window').textContent = 'last ' + formatSpan(h.seconds);
    buildLegend();
    const body = $('latest').tBodies[0];
    body.replaceChildren(...h.latest.map((r) => row(r, false)));
    $('empty').hidden = h.latest.length > 0;
  }

  function onRejection(r) {
    if (!state.loaded) {
      state.pending.push(r);
      return;
    }
    if (r.seq <= state.seq) return;
    state.seq = r.seq;
    count(r);
    const body = $('latest').tBodies[0];
    body.prepend(row(r, true));
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
    $('empty').hidden = true;
    draw();
  }

  function count(r) {
    const sec = Math.floor(Date.parse(r.at) / 1000);
    if (sec > state.end) advance(sec);
    const i = state.seconds - 1 - (state.end - sec);
    const series = state.counts[r.reason];
    if (series && i >= 0) series[i]++;
  }

  // advance moves the window so that it ends at second sec.
  function advance(sec) {
    const d = sec - state.end;
    if (d <= 0) return;
    for (const r of state.reasons) {
      const a = state.counts[r];
      if (d >= a.length) a.fill(0);
      else a.copyWithin(0, d).fill(0, a.length - d);
    }
    state.end = sec;
  }

  function onStats(s) {
    state.offset = s.now - Date.now();
    const lag = $('lag'), waiters = $('waiters');
    if (s.error) {
      lag.textContent = waiters.textContent = '?';
      lag.title = waiters.title = s.error;
      return;
    }
    lag.textContent = s.lag.toLocaleString();
    waiters.textContent = s.waiters.toLocaleString();
  }

  const serverSecond = () => Math.floor((Date.now() + state.offset) / 1000);

  // --- list -----------------------------------------------------------------

  // row builds a table row with textContent only: usernames are whatever
  // someone typed, and must never be parsed as HTML.
  function row(r, isNew) {
    const tr = document.createElement('tr');
    tr.className = reasonClass(r.reason) + (isNew ? ' new' : '');
    const at = new Date(r.at);
    cell(tr, at.toLocaleTimeString([], { hour12: false }), at.toISOString());
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = r.reason;
    cell(tr, '', r.detail || '').append(badge);
    cell(tr, r.username || '', r.detail || '').className = 'name';
    cell(tr, r.canonical || '').className = 'name';
    cell(tr, r.conflicts_with || '').className = 'name';
    const user = r.user_id || '';
    cell(tr, user.length > 8 ? user.slice(0, 8) + '…' : user, user).className = 'user';
    cell(tr, r.caller || '').className = 'name';
    return tr;
  }

  function cell(tr, text, title) {
    const td = tr.insertCell();
    td.textContent = text;
    if (title) td.title = title;
    return td;
  }

  const reasonClass = (reason) => 'r-' + (state.reasons.includes(reason) ? reason : 'other');

  function buildLegend() {
    $('legend').replaceChildren(...state.reasons.map((r) => {
      const li = document.createElement('li');
      li.className = reasonClass(r);
      li.append(r);
      const n = document.createElement('span');
      n.className = 'n';
      n.id = 'total-' + r;
      li.append(n);
      return li;
    }));
  }

  // --- chart ----------------------------------------------------------------

  const M = { left: 44, right: 8, top: 8, bottom: 22 }; // plot margins, CSS pixels

  function draw() {
    updateTotals();
    const canvas = $('chart');
    const css = getComputedStyle(document.documentElement);
    const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const plot = { x: M.left, y: M.top, w: w - M.left - M.right, h: h - M.top - M.bottom };
    const top = niceMax(peak());
    drawGrid(ctx, css, plot, top);
    drawBars(ctx, css, plot, top);
    drawTimeAxis(ctx, css, plot);
  }

  function peak() {
    let max = 0;
    for (let i = 0; i < state.seconds; i++) {
      let sum = 0;
      for (const r of state.reasons) sum += state.counts[r][i];
      max = Math.max(max, sum);
    }
    return max;
  }

  // niceMax rounds the peak up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    return [1, 2, 5, 10].map((m) => m * p).find((n) => n >= v);
  }

  function drawGrid(ctx, css, plot, top) {
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = css.getPropertyValue('--muted');
    ctx.strokeStyle = css.getPropertyValue('--grid');
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    const steps = top === 1 ? 1 : top % 4 === 0 ? 4 : top % 5 === 0 ? 5 : 2;
    for (let k = 0; k <= steps; k++) {
      const v = (top * k) / steps;
      const y = Math.round(plot.y + plot.h - (v / top) * plot.h) + 0.5;
      ctx.beginPath();
      ctx.moveTo(plot.x, y);
      ctx.lineTo(plot.x + plot.w, y);
      ctx.stroke();
      ctx.fillText(v % 1 ? v.toFixed(1) : String(v), plot.x - 6, y);
    }
    ctx.save();
    ctx.translate(10, plot.y + plot.h / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = 'center';
    ctx.fillText('per second', 0, 0);
    ctx.restore();
  }

  // drawBars stacks one bar per second; a bar is at least 2 pixels wide so
  // that a single rejection in a long window stays visible.
  function drawBars(ctx, css, plot, top) {
    const bw = plot.w / state.seconds;
    const colors = state.reasons.map((r) => css.getPropertyValue('--' + r).trim() || '#888');
    for (let i = 0; i < state.seconds; i++) {
      let y = plot.y + plot.h;
      state.reasons.forEach((r, k) => {
        const n = state.counts[r][i];
        if (!n) return;
        const bh = (n / top) * plot.h;
        ctx.fillStyle = colors[k];
        ctx.fillRect(plot.x + i * bw, y - bh, Math.max(bw, 2), bh);
        y -= bh;
      });
    }
  }

  function drawTimeAxis(ctx, css, plot) {
    ctx.fillStyle = css.getPropertyValue('--muted');
    ctx.textBaseline = 'top';
    const every = state.seconds >= 1800 ? 600 : state.seconds >= 600 ? 300 : state.seconds >= 120 ? 60 : 10;
    for (let ago = 0; ago < state.seconds; ago += every) {
      const x = plot.x + plot.w * (1 - ago / state.seconds);
      ctx.textAlign = ago === 0 ? 'right' : 'center';
      ctx.fillText(ago === 0 ? 'now' : '−' + formatSpan(ago), x, plot.y + plot.h + 6);
    }
    ctx.textAlign = 'left';
    ctx.fillText('−' + formatSpan(state.seconds), plot.x, plot.y + plot.h + 6);
  }

  function updateTotals() {
    let lastMinute = 0;
    for (const r of state.reasons) {
      const a = state.counts[r];
      const el = $('total-' + r);
      if (el) el.textContent = window.rejectionsUI.total(r).toLocaleString();
      for (let i = Math.max(0, a.length - 60); i < a.length; i++) lastMinute += a[i];
    }
    $('rate').textContent = state.loaded ? lastMinute.toLocaleString() : '–';
  }

  function formatSpan(s) {
    if (s % 3600 === 0) return s / 3600 + 'h';
    if (s % 60 === 0) return s / 60 + 'm';
    return s + 's';
  }

  // tooltip: what the bar under the pointer counts.
  function hover(ev) {
    const canvas = $('chart'), tip = $('tip');
    const x = ev.offsetX - M.left, w = canvas.clientWidth - M.left - M.right;
    const i = Math.floor((x / w) * state.seconds);
    if (!state.loaded || i < 0 || i >= state.seconds) {
      tip.hidden = true;
      return;
    }
    const at = new Date((state.end - (state.seconds - 1 - i)) * 1000);
    const lines = state.reasons.filter((r) => state.counts[r][i]).map((r) => `${r}: ${state.counts[r][i]}`);
    tip.textContent = [at.toLocaleTimeString([], { hour12: false }), ...(lines.length ? lines : ['none'])].join('\n');
    tip.hidden = false;
    tip.style.left = Math.min(ev.offsetX + 12, canvas.clientWidth - tip.offsetWidth) + 'px';
  }

  // --- start ----------------------------------------------------------------

  function tick() {
    if (state.loaded) advance(serverSecond());
    draw();
  }

  for (const r of state.reasons) state.counts[r] = new Array(state.seconds).fill(0);
  buildLegend();
  $('chart').addEventListener('mousemove', hover);
  $('chart').addEventListener('mouseleave', () => { $('tip').hidden = true; });
  window.addEventListener('resize', draw);
  setInterval(tick, 1000);
  connect();
  draw();
})();

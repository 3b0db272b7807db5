// Orders page: look up one order, list recent ones.
//
// Security rule for this file: data from the server or from the user is only ever
// inserted with textContent / createElement / setAttribute — never as HTML.
(function () {
  'use strict';

  /** Same rule as the server: 1..64 characters of [A-Za-z0-9_-]. */
  var UID_RE = /^[A-Za-z0-9_-]{1,64}$/;
  var RECENT_LIMIT = 20;
  var TIMEOUT_MS = 10000;
  var EMPTY = '\u2014'; // em dash shown for missing values
  var BASE_TITLE = document.title || 'Orders';

  var els = {};

  // ---------------------------------------------------------------- helpers

  function byId(id) {
    var el = document.getElementById(id);
    if (!el) throw new Error('missing element #' + id);
    return el;
  }

  /** Build an element; children are nodes or strings (strings become text nodes). */
  function h(tag, className, children) {
    var el = document.createElement(tag);
    if (className) el.className = className;
    (children || []).forEach(function (child) {
      el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function isPresent(v) {
    return v !== null && v !== undefined && v !== '';
  }

  function text(v) {
    return isPresent(v) ? String(v) : EMPTY;
  }

  function get(obj, path) {
    return path.split('.').reduce(function (acc, key) {
      return acc !== null && typeof acc === 'object' && Object.prototype.hasOwnProperty.call(acc, key)
        ? acc[key]
        : undefined;
    }, obj);
  }

  /** Money is a plain integer in the order's currency: "1817 USD". */
  function money(v, currency) {
    if (typeof v !== 'number' || !isFinite(v)) return EMPTY;
    return isPresent(currency) ? v + ' ' + currency : String(v);
  }

  var dateFormat = (function () {
    try {
      return new Intl.DateTimeFormat(undefined, {
        year: 'numeric', month: 'short', day: 'numeric',
        hour: '2-digit', minute: '2-digit', second: '2-digit',
        hour12: false, timeZone: 'UTC', timeZoneName: 'short'
      });
    } catch (e) {
      return null;
    }
  })();

  function parseDate(v) {
    if (typeof v !== 'string' || v === '') return null;
    var d = new Date(v);
    return isNaN(d.getTime()) ? null : d;
  }

  function formatDate(d) {
    if (!d) return '';
    try {
      return dateFormat ? dateFormat.format(d) : d.toUTCString();
    } catch (e) {
      return d.toISOString();
    }
  }

  /** <time datetime=ISO>readable</time> followed by the raw value. */
  function renderDateInto(dd, d, raw) {
    clear(dd);
    if (!d) {
      dd.textContent = text(raw);
      return;
    }
    var time = h('time', null, [formatDate(d)]);
    time.setAttribute('datetime', d.toISOString());
    dd.appendChild(time);
    dd.appendChild(document.createTextNode(' '));
    dd.appendChild(h('span', 'raw', [String(raw)]));
  }

  function messageParts(kind, parts) {
    var msg = els.message;
    clear(msg);
    if (!parts) {
      msg.removeAttribute('data-kind');
      return;
    }
    msg.setAttribute('data-kind', kind);
    parts.forEach(function (part) {
      msg.appendChild(typeof part === 'string' ? document.createTextNode(part) : part);
    });
  }

  function uidCode(uid) {
    return h('code', 'uid', [uid]);
  }

  function showInvalid(uid) {
    if (uid === '') {
      messageParts('error', ["Enter an order id: use 1 to 64 letters, digits, '-' or '_'."]);
    } else {
      messageParts('error', [uidCode(uid), " is not a valid order id: use 1 to 64 letters, digits, '-' or '_'."]);
    }
    els.input.setAttribute('aria-invalid', 'true');
  }

  function showNotFound(uid) {
    messageParts('warning', ['No order with id ', uidCode(uid), ' was found.']);
  }

  function showUnavailable() {
    messageParts('error', ['The service is unavailable right now; try again in a moment.']);
  }

  function showUnexpected(uid, status) {
    messageParts('error', [
      'Could not load order ', uidCode(uid),
      status ? ' (HTTP ' + status + ').' : ': the service sent an unexpected response.'
    ]);
  }

  function setLoading(on) {
    els.progress.hidden = !on;
    if (on) els.order.setAttribute('aria-busy', 'true');
    else els.order.removeAttribute('aria-busy');
  }

  /** fetch with a timeout; `outer` aborts it early (a newer request replaced it). */
  function fetchJson(url, outer) {
    var ctrl = new AbortController();
    var timer = setTimeout(function () { ctrl.abort(); }, TIMEOUT_MS);
    if (outer) outer.addEventListener('abort', function () { ctrl.abort(); });
    return fetch(url, {
      headers: { Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'same-origin',
      signal: ctrl.signal
    }).then(function (res) {
      return res.text().then(function (body) {
        var json = null;
        try { json = body ? JSON.parse(body) : null; } catch (e) { json = null; }
        return { status: res.status, ok: res.ok, json: json };
      });
    }).finally(function () {
      clearTimeout(timer);
    });
  }

  // ---------------------------------------------------------------- order view

  function hideOrder() {
    els.order.hidden = true;
    clear(els.itemsBody);
    markCurrent(null);
  }

  function renderOrder(order) {
    var currency = get(order, 'payment.currency');

    els.orderUid.textContent = text(order.order_uid);

    var fields = els.order.querySelectorAll('[data-field]');
    Array.prototype.forEach.call(fields, function (dd) {
      var value = get(order, dd.getAttribute('data-field'));
      var format = dd.getAttribute('data-format');
      dd.classList.toggle('empty', !isPresent(value));
      if (format === 'money') {
        dd.textContent = money(value, currency);
      } else if (format === 'datetime') {
        renderDateInto(dd, parseDate(value), value);
      } else if (format === 'unix') {
        var d = typeof value === 'number' && isFinite(value) ? new Date(value * 1000) : null;
        renderDateInto(dd, d && !isNaN(d.getTime()) ? d : null, value);
      } else {
        dd.textContent = text(value);
      }
    });

    var items = Array.isArray(order.items) ? order.items : [];
    var rows = items.map(function (item) {
      item = item && typeof item === 'object' ? item : {};
      var sale = typeof item.sale === 'number' ? item.sale + '%' : text(item.sale);
      var cells = [
        [text(item.name), 'name'],
        [text(item.brand), ''],
        [text(item.size), ''],
        [money(item.price, currency), 'num'],
        [sale, 'num'],
        [money(item.total_price, currency), 'num'],
        [text(item.chrt_id), 'num'],
        [text(item.nm_id), 'num'],
        [text(item.rid), 'mono'],
        [text(item.status), 'num']
      ];
      return h('tr', null, cells.map(function (c) { return h('td', c[1], [c[0]]); }));
    });
    clear(els.itemsBody);
    rows.forEach(function (row) { els.itemsBody.appendChild(row); });
    els.itemsCount.textContent = '(' + items.length + ')';
    els.itemsEmpty.hidden = items.length > 0;

    els.order.hidden = false;
    markCurrent(order.order_uid);
    document.title = 'Order ' + text(order.order_uid) + ' \u00b7 ' + BASE_TITLE;
  }

  var orderRequest = null; // AbortController of the order request in flight

  /** Show order `uid` (already trimmed). Does not touch the URL. */
  function loadOrder(uid, options) {
    options = options || {};
    if (orderRequest) orderRequest.abort();
    orderRequest = null;
    els.input.removeAttribute('aria-invalid');

    if (!UID_RE.test(uid)) {
      setLoading(false);
      hideOrder();
      showInvalid(uid);
      document.title = BASE_TITLE;
      return Promise.resolve();
    }

    var mine = new AbortController();
    orderRequest = mine;
    messageParts(null, null);
    setLoading(true);

    return fetchJson('/order/' + encodeURIComponent(uid), mine.signal).then(function (res) {
      if (mine.signal.aborted) return;
      if (res.status === 200 && res.json && typeof res.json === 'object' && !Array.isArray(res.json)) {
        renderOrder(res.json);
        if (options.focus) els.orderUid.focus();
        return;
      }
      hideOrder();
      document.title = BASE_TITLE;
      if (res.status === 404) showNotFound(uid);
      else if (res.status === 400) showInvalid(uid);
      else if (res.status === 503 || res.status === 502 || res.status === 504) showUnavailable();
      else showUnexpected(uid, res.ok ? 0 : res.status);
    }, function () {
      // Network error or timeout (a superseded request is ignored).
      if (mine.signal.aborted) return;
      hideOrder();
      document.title = BASE_TITLE;
      showUnavailable();
    }).finally(function () {
      if (orderRequest === mine) {
        orderRequest = null;
        setLoading(false);
      }
    });
  }

  // ---------------------------------------------------------------- URL state

  function uidFromLocation() {
    var uid = new URLSearchParams(window.location.search).get('uid');
    return uid === null ? null : uid.trim();
  }

  function urlFor(uid) {
    return window.location.pathname + '?' + new URLSearchParams({ uid: uid }).toString();
  }

  /** A user asked for `uid`: record it in history (if valid and new) and show it. */
  function navigate(uid, options) {
    if (UID_RE.test(uid) && uidFromLocation() !== uid) {
      window.history.pushState({ uid: uid }, '', urlFor(uid));
    }
    return loadOrder(uid, options);
  }

  function showFromLocation() {
    var uid = uidFromLocation();
    if (uid === null) {
      if (orderRequest) orderRequest.abort();
      orderRequest = null;
      setLoading(false);
      els.input.value = '';
      els.input.removeAttribute('aria-invalid');
      hideOrder();
      messageParts(null, null);
      document.title = BASE_TITLE;
      return;
    }
    els.input.value = uid;
    loadOrder(uid);
  }

  // ---------------------------------------------------------------- recent orders

  var recentRequest = null;
  var shownUid = null;

  function markCurrent(uid) {
    shownUid = uid === undefined ? null : uid;
    var links = els.recent.querySelectorAll('a[data-uid]');
    Array.prototype.forEach.call(links, function (a) {
      if (shownUid !== null && a.getAttribute('data-uid') === String(shownUid)) {
        a.setAttribute('aria-current', 'true');
      } else {
        a.removeAttribute('aria-current');
      }
    });
  }

  function recentDate(raw) {
    var d = parseDate(raw);
    return d ? formatDate(d) : text(raw);
  }

  function renderRecent(list) {
    clear(els.recent);
    list.forEach(function (o) {
      if (!o || typeof o !== 'object' || typeof o.order_uid !== 'string') return;
      var uid = o.order_uid;
      var count = typeof o.items === 'number' ? o.items : null;
      var meta = [
        recentDate(o.date_created),
        count === null ? null : count + (count === 1 ? ' item' : ' items'),
        money(o.amount, o.currency)
      ].filter(function (x) { return x !== null && x !== EMPTY; }).join(' \u00b7 ');

      var a = h('a', 'recent-link', [h('span', 'recent-uid', [uid]), h('span', 'recent-meta', [meta])]);
      a.setAttribute('href', urlFor(uid)); // "/...?uid=..." — always a same-origin relative URL
      a.setAttribute('data-uid', uid);
      els.recent.appendChild(h('li', null, [a]));
    });
    els.recentStatus.textContent = els.recent.childElementCount === 0 ? 'No orders yet.' : '';
    markCurrent(shownUid);
  }

  function loadRecent() {
    if (recentRequest) recentRequest.abort();
    var mine = new AbortController();
    recentRequest = mine;
    els.recent.setAttribute('aria-busy', 'true');
    els.refresh.setAttribute('aria-disabled', 'true');
    if (els.recent.childElementCount === 0) els.recentStatus.textContent = 'Loading\u2026';

    return fetchJson('/orders?limit=' + RECENT_LIMIT, mine.signal).then(function (res) {
      if (mine.signal.aborted) return;
      if (res.status === 200 && Array.isArray(res.json)) {
        renderRecent(res.json);
      } else if (res.status === 503 || res.status === 502 || res.status === 504) {
        els.recentStatus.textContent = 'Recent orders are unavailable right now; try again in a moment.';
      } else {
        els.recentStatus.textContent = 'Could not load recent orders (HTTP ' + res.status + ').';
      }
    }, function () {
      if (mine.signal.aborted) return;
      els.recentStatus.textContent = 'Recent orders are unavailable right now; try again in a moment.';
    }).finally(function () {
      if (recentRequest === mine) {
        recentRequest = null;
        els.recent.removeAttribute('aria-busy');
        els.refresh.removeAttribute('aria-disabled');
      }
    });
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    els.form = byId('search-form');
    els.input = byId('uid');
    els.message = byId('message');
    els.progress = byId('progress');
    els.order = byId('order');
    els.orderUid = byId('order-uid');
    els.itemsBody = byId('items').tBodies[0];
    els.itemsCount = byId('items-count');
    els.itemsEmpty = byId('items-empty');
    els.recent = byId('recent');
    els.recentStatus = byId('recent-status');
    els.refresh = byId('refresh');

    els.form.addEventListener('submit', function (event) {
      event.preventDefault();
      var uid = els.input.value.trim();
      els.input.value = uid;
      navigate(uid);
    });

    els.input.addEventListener('input', function () {
      els.input.removeAttribute('aria-invalid');
    });

    els.refresh.addEventListener('click', function () {
      loadRecent();
    });

    els.recent.addEventListener('click', function (event) {
      var a = event.target.closest ? event.target.closest('a[data-uid]') : null;
      if (!a) return;
      // Let the browser handle "open in new tab/window" gestures.
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      var uid = a.getAttribute('data-uid');
      els.input.value = uid;
      navigate(uid, { focus: true });
    });

    window.addEventListener('popstate', showFromLocation);

    // "/" jumps to the search box (unless typing somewhere already).
    document.addEventListener('keydown', function (event) {
      if (event.key !== '/' || event.metaKey || event.ctrlKey || event.altKey) return;
      var t = event.target;
      var tag = t && t.tagName;
      if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || (t && t.isContentEditable)) return;
      event.preventDefault();
      els.input.focus();
      els.input.select();
    });

    showFromLocation();
    loadRecent();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();

// The callbridge operator console: one page over the engine's feed (server-sent events) and
// its control endpoints. The toolkit (preact + htm) is vendored; this file is the app alone.
import { html, render, useEffect, useState } from "./vendor/htm-preact-standalone.module.js";

const FEED_EVENTS = ["live", "levels", "bridges", "webhooks", "audit"];
const FLOOR_DBFS = -60; // the meter's empty end; 0 dBFS (a full-scale sine) fills it

function meterValue(dbfs) {
  if (dbfs === null || dbfs === undefined) return 0;
  return Math.min(1, Math.max(0, (dbfs - FLOOR_DBFS) / -FLOOR_DBFS));
}

const short = (id) => (id ? id.slice(0, 10) : "");
const clock = (epoch) => new Date(epoch * 1000).toLocaleTimeString();

function duration(seconds) {
  const m = Math.floor(seconds / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return `${m}:${s}`;
}

async function control(csrf, leg, action, body) {
  const response = await fetch(`/console/api/calls/${encodeURIComponent(leg)}/actions/${action}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body || {}),
  });
  if (response.ok) return;
  let detail = `${response.status} ${response.statusText}`;
  try {
    const answer = await response.json();
    detail = answer.errors?.[0]?.detail || answer.message || detail;
  } catch (_) { /* not JSON: keep the status line */ }
  throw new Error(detail);
}

function useFeed() {
  const [feed, setFeed] = useState({
    connected: false, live: { legs: [], rooms: [] }, levels: {}, levelUpdates: 0,
    bridges: [], webhooks: [], audit: [],
  });
  useEffect(() => {
    const source = new EventSource("/console/api/feed");
    source.onopen = () => setFeed((f) => ({ ...f, connected: true }));
    source.onerror = () => setFeed((f) => ({ ...f, connected: false }));
    for (const name of FEED_EVENTS) {
      source.addEventListener(name, (event) => {
        const data = JSON.parse(event.data);
        setFeed((f) => name === "levels"
          ? { ...f, levels: data, levelUpdates: f.levelUpdates + 1 }
          : { ...f, [name]: data });
      });
    }
    return () => source.close();
  }, []);
  return feed;
}

function Meter({ dbfs }) {
  const label = dbfs === null || dbfs === undefined ? "no media" : `${dbfs.toFixed(1)} dBFS`;
  return html`<meter class="level" min="0" max="1" low="0.5" high="0.9" optimum="0.7"
    value=${meterValue(dbfs)} data-dbfs=${dbfs ?? ""} title=${label}></meter>`;
}

function MediaStats({ media }) {
  if (!media) return html`<span class="muted">no media</span>`;
  return html`<span class="mono" title="frames in/out, lost, late, concealed, jitter">
    ${media.frames_in}/${media.frames_out} · lost ${media.lost} · conc ${media.concealed}
    · ${media.jitter_ms} ms</span>`;
}

function LegControls({ leg, others, act }) {
  const [peer, setPeer] = useState("");
  const record = leg.recording
    ? html`<button class="record-stop" onClick=${() => act(leg, "record_stop")}>Stop rec</button>`
    : html`<button class="record-start"
        onClick=${() => act(leg, "record_start", { format: "wav", channels: "single" })}>Record</button>`;
  return html`<div class="controls">
    <button class="hangup" onClick=${() => act(leg, "hangup")}>Hang up</button>
    <button class="unbridge" disabled=${!leg.room_id} onClick=${() => act(leg, "unbridge")}>Unbridge</button>
    ${record}
    ${leg.room_id && leg.room_id.startsWith("conf:")
      ? html`<button class=${leg.muted ? "unmute" : "mute"}
          onClick=${() => act(leg, leg.muted ? "unmute" : "mute")}>${leg.muted ? "Unmute" : "Mute"}</button>
        <button class=${leg.on_hold ? "unhold" : "hold"}
          onClick=${() => act(leg, leg.on_hold ? "unhold" : "hold")}>${leg.on_hold ? "Unhold" : "Hold"}</button>`
      : ""}
    <select class="peer" value=${peer} onChange=${(e) => setPeer(e.target.value)}
      aria-label="leg to bridge with">
      <option value="">bridge with…</option>
      ${others.map((o) => html`<option value=${o.call_control_id}>${short(o.call_control_id)} ${o.from}</option>`)}
    </select>
    <button class="bridge" disabled=${!peer}
      onClick=${() => act(leg, "bridge", { call_control_id: peer })}>Move</button>
  </div>`;
}

function Legs({ live, levels, levelUpdates, act }) {
  const legs = live.legs;
  return html`<section class="wide" id="legs" data-level-updates=${levelUpdates}>
    <h2>Live legs (${legs.length})</h2>
    ${legs.length === 0 ? html`<p class="muted">No live legs.</p>` : html`<table>
      <thead><tr><th>Leg</th><th>Provider</th><th>Direction</th><th>From → To</th><th>State</th>
        <th>Duration</th><th>Room</th><th>Level</th><th>Media</th><th></th></tr></thead>
      <tbody>${legs.map((leg) => html`<tr key=${leg.call_control_id} data-leg=${leg.call_control_id}
          data-state=${leg.state}>
        <td class="mono" title=${leg.call_control_id}>${short(leg.call_control_id)}</td>
        <td>${leg.provider ?? "—"}</td><td>${leg.direction}</td>
        <td class="mono">${leg.from} → ${leg.to}</td>
        <td class=${"state-" + leg.state}>${leg.state}${leg.recording ? " ●rec" : ""}${leg.muted ? " (muted)" : ""}${leg.on_hold ? " (on hold)" : ""}</td>
        <td class="mono">${duration(leg.duration_s)}</td>
        <td class="mono">${leg.room_id ? short(leg.room_id) : leg.queue ? "queue " + leg.queue : "—"}</td>
        <td><${Meter} dbfs=${levels[leg.call_control_id]} /></td>
        <td><${MediaStats} media=${leg.media} /></td>
        <td><${LegControls} leg=${leg} act=${act}
          others=${legs.filter((o) => o.call_control_id !== leg.call_control_id)} /></td>
      </tr>`)}</tbody></table>`}
  </section>`;
}

// Listening to a room: the engine sends its members' audio summed, about 100 ms of 8 kHz PCM
// per server-sent "audio" event; each chunk is scheduled right after the previous one on the
// Web Audio clock, a quarter second ahead so that a late chunk does not break the sound.
class RoomListener {
  constructor(roomId, onChunk) {
    this.roomId = roomId;
    this.chunks = 0;
    this.level = null;
    this.context = new AudioContext();
    this.next = 0;
    this.events = new EventSource(`/console/api/rooms/${encodeURIComponent(roomId)}/audio`);
    this.events.addEventListener("audio", (event) => {
      this.play(JSON.parse(event.data));
      onChunk(this);
    });
  }

  play(chunk) {
    const raw = atob(chunk.pcm);
    const count = raw.length >> 1;
    if (count === 0) return;
    const buffer = this.context.createBuffer(1, count, chunk.rate);
    const out = buffer.getChannelData(0);
    for (let i = 0; i < count; i += 1) {
      const value = raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8); // little-endian
      out[i] = (value >= 32768 ? value - 65536 : value) / 32768;
    }
    const node = this.context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.context.destination);
    const now = this.context.currentTime;
    if (this.next < now + 0.05) this.next = now + 0.25; // started, or fell behind: lead again
    node.start(this.next);
    this.next += buffer.duration;
    this.chunks += 1;
    this.level = chunk.level;
  }

  stop() {
    this.events.close();
    this.context.close();
  }
}

function Rooms({ rooms }) {
  const [listener, setListener] = useState(null);
  const [, setHeard] = useState(0); // re-render as chunks arrive
  useEffect(() => () => listener && listener.stop(), [listener]);
  const toggle = (roomId) => {
    if (listener) listener.stop();
    setListener(listener && listener.roomId === roomId
      ? null : new RoomListener(roomId, (l) => setHeard(l.chunks)));
  };
  return html`<section id="rooms"><h2>Rooms (${rooms.length})</h2>
    ${rooms.length === 0 ? html`<p class="muted">No rooms.</p>` : html`<table>
      <thead><tr><th>Room</th><th>Kind</th><th>Media</th><th>Members</th><th></th></tr></thead>
      <tbody>${rooms.map((r) => {
        const on = listener && listener.roomId === r.room_id;
        return html`<tr key=${r.room_id} data-room=${r.room_id}>
        <td class="mono" title=${r.room_id}>${short(r.room_id)}</td><td>${r.kind}</td>
        <td>${r.forwarded ? "forwarded" : "mixed"}</td>
        <td class="mono">${r.members.map(short).join(", ")}${r.supervisors.length ? ` (+${r.supervisors.map(short).join(", ")} supervising)` : ""}${r.pending ? ` (+${short(r.pending)} ringing)` : ""}</td>
        <td><button class="listen" onClick=${() => toggle(r.room_id)}>${on ? "Stop" : "Listen"}</button>
          ${on ? html` <span class="mono heard" data-chunks=${listener.chunks}
            data-level=${listener.level ?? ""}>${listener.chunks} chunks${listener.level === null ? "" : `, ${listener.level} dBFS`}</span>` : ""}</td>
      </tr>`;
      })}</tbody></table>`}
  </section>`;
}

function Bridges({ bridges }) {
  return html`<section id="bridges"><h2>Bridges (${bridges.length})</h2>
    ${bridges.length === 0 ? html`<p class="muted">No bridges.</p>` : html`<table>
      <thead><tr><th>Name</th><th>Status</th><th>Numbers</th></tr></thead>
      <tbody>${bridges.map((b) => html`<tr key=${b.id} data-bridge=${b.slug}>
        <td>${b.name} <span class="muted mono">${b.slug}</span></td><td>${b.status}</td>
        <td class="mono wrap">${b.numbers.map((n) => n.number).join(", ") || "—"}</td>
      </tr>`)}</tbody></table>`}
  </section>`;
}

function Webhooks({ webhooks }) {
  return html`<section id="webhooks"><h2>Webhooks sent</h2><div class="log"><ul>
    ${webhooks.map((w) => html`<li key=${w.id} data-event=${w.event_type}>
      <span class="mono">${clock(w.created)}</span> <b>${w.event_type}</b>
      <span class="mono muted">${short(w.call_control_id)}</span>
      <span class=${"badge " + (w.status ?? "pending")}>${w.status ?? "pending"}</span>
      ${w.attempts > 1 ? html`<span class="muted"> ${w.attempts} attempts</span>` : ""}
    </li>`)}</ul></div></section>`;
}

function Audit({ audit }) {
  return html`<section id="audit"><h2>Audit log</h2>
    ${audit.length === 0 ? html`<p class="muted">No control actions yet.</p>` : ""}
    <div class="log"><ul>
    ${audit.map((a) => html`<li key=${a.id} data-action=${a.action}>
      <span class="mono">${clock(a.at)}</span> <b>${a.action}</b>
      <span class="mono muted">${short(a.call_control_id)}</span>
      <span class=${"badge " + (a.outcome === "ok" ? "ok" : "error")}>${a.outcome}</span>
      <span class="muted"> token #${a.token_id}</span>
    </li>`)}</ul></div></section>`;
}

function Console({ session }) {
  const feed = useFeed();
  const [problem, setProblem] = useState(null);
  const act = async (leg, action, body) => {
    setProblem(null);
    try {
      await control(session.csrf_token, leg.call_control_id, action, body);
    } catch (error) {
      setProblem(`${action} on ${short(leg.call_control_id)}: ${error.message}`);
    }
  };
  const signOut = async () => {
    await fetch("/console/signout", {
      method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": session.csrf_token },
    });
    window.location.assign("/console/signin");
  };
  const org = session.organization;
  return html`<header>
      <h1>callbridge console</h1>
      <span class="org">${org.name} <span class="mono">(${org.domain_handle})</span></span>
      <span class="spacer"></span>
      <span class=${"status " + (feed.connected ? "live" : "down")}>${feed.connected ? "live" : "reconnecting"}</span>
      <button onClick=${signOut}>Sign out</button>
    </header>
    ${problem ? html`<p class="error" role="alert" id="problem">${problem}</p>` : ""}
    <main class="grid">
      <${Legs} live=${feed.live} levels=${feed.levels} levelUpdates=${feed.levelUpdates} act=${act} />
      <${Rooms} rooms=${feed.live.rooms} />
      <${Bridges} bridges=${feed.bridges} />
      <${Webhooks} webhooks=${feed.webhooks} />
      <${Audit} audit=${feed.audit} />
    </main>`;
}

async function start() {
  const response = await fetch("/console/api/session", { credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign("/console/signin");
    return;
  }
  const { data } = await response.json();
  const app = document.getElementById("app");
  app.textContent = ""; // the "Loading" line: preact renders into an empty node
  render(html`<${Console} session=${data} />`, app);
}

start();

#!/usr/bin/env python3
"""Writes the two Grafana dashboards next to this file:

  fennec-prometheus.json  for a Prometheus data source scraping `--admin`'s /metrics
  fennec-statsd.json      for a Graphite data source fed by the StatsD daemon
                          (`--statsd`, statsd's graphite backend, default names)

Both import as they are (Dashboards -> New -> Import; pick the data source
when asked). Run this after changing a panel: python3 contrib/grafana/generate.py
tests/grafana.rs checks that every metric the dashboards use is one Fennec sends.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def panel(i, title, unit, targets, ds, w=12, h=8):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": ds,
        "gridPos": {"h": h, "w": w, "x": (i % 2) * 12, "y": (i // 2) * h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": targets,
    }


class Panels:
    """A dashboard's panels, in order, with each panel's targets lettered A, B, ..."""

    def __init__(self, ds):
        self.ds, self.rows, self.refs = ds, [], iter("ABCDEFGHIJ")

    def ref(self):
        return next(self.refs)

    def add(self, title, unit, targets):
        self.rows.append(panel(len(self.rows), title, unit, targets, self.ds))
        self.refs = iter("ABCDEFGHIJ")


def dashboard(uid, title, ds_input, panels, extra_vars=()):
    return {
        "__inputs": [ds_input],
        "uid": uid,
        "title": title,
        "tags": ["fennec"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "templating": {"list": list(extra_vars)},
        "panels": panels,
    }


def prometheus():
    p = Panels({"type": "prometheus", "uid": "${DS_PROMETHEUS}"})
    add = p.add

    def t(expr, legend):
        return {"expr": expr, "legendFormat": legend, "refId": p.ref()}

    def rate(name, legend, window="1m"):
        return t(f"sum(rate({name}[{window}]))", legend)

    add("Messages / s", "ops", [rate("fennec_messages_received_total", "in"), rate("fennec_messages_sent_total", "out")])
    add("Bytes / s", "Bps", [rate("fennec_received_bytes_total", "in"), rate("fennec_sent_bytes_total", "out")])
    q = "histogram_quantile({q}, sum by (op, le) (rate(fennec_op_duration_seconds_bucket[1m])))"
    add("Latency p99 by op", "s", [t(q.format(q="0.99"), "{{op}}")])
    add("Latency p50 by op", "s", [t(q.format(q="0.5"), "{{op}}")])
    add("Sessions", "short", [t("fennec_sessions", "all"), t("fennec_worker_sessions", "worker {{worker}}")])
    add("Session closes / s by reason", "ops", [t("sum by (reason) (rate(fennec_sessions_closed_total[5m]))", "{{reason}}")])
    add(
        "Drops and slow consumers / s",
        "ops",
        [
            rate("fennec_events_dropped_total", "WAMP events dropped"),
            rate("fennec_mqtt_dropped_total", "MQTT messages dropped"),
            t('sum(rate(fennec_sessions_closed_total{reason="slow_consumer"}[5m]))', "slow consumers closed"),
        ],
    )
    add(
        "MQTT flows / s",
        "ops",
        [
            rate("fennec_mqtt_publish_received_total", "PUBLISH in"),
            rate("fennec_mqtt_publish_sent_total", "PUBLISH out"),
            t('sum by (op) (rate(fennec_op_duration_seconds_count{op=~"mqtt.publish_deliver.qos.*"}[1m]))', "{{op}}"),
            rate("fennec_mqtt_connects_total", "CONNECT"),
        ],
    )
    add(
        "Refusals / s",
        "ops",
        [
            rate("fennec_auth_failed_total", "failed authentications"),
            rate("fennec_mqtt_denied_total", "MQTT PUBLISH denied"),
            rate("fennec_retained_refused_total", "retained over a store bound"),
            rate("fennec_history_dropped_total", "history pushed out"),
        ],
    )
    add(
        "Messages / s by realm",
        "ops",
        [
            t("sum by (realm) (rate(fennec_realm_messages_received_total[1m]))", "{{realm}} in"),
            t("sum by (realm) (rate(fennec_realm_messages_sent_total[1m]))", "{{realm}} out"),
        ],
    )
    add("Sessions by realm", "short", [t("sum by (realm, protocol) (fennec_realm_sessions)", "{{realm}} {{protocol}}")])
    add(
        "Drops and slow consumers / s by realm",
        "ops",
        [
            t("sum by (realm) (rate(fennec_realm_dropped_total[5m]))", "{{realm}} dropped"),
            t("sum by (realm) (rate(fennec_realm_slow_consumer_closes_total[5m]))", "{{realm}} slow consumers closed"),
        ],
    )
    add(
        "MQTT sessions, retained keys",
        "short",
        [
            t("fennec_mqtt_sessions", "MQTT {{state}}"),
            t("fennec_retained_keys", "retained keys"),
            t("sum by (realm) (fennec_realm_retained_keys)", "retained keys {{realm}}"),
        ],
    )
    add(
        "Worker load",
        "ops",
        [
            t("sum by (worker) (rate(fennec_worker_messages_received_total[1m]))", "worker {{worker}} in"),
            t("sum by (worker) (rate(fennec_worker_messages_sent_total[1m]))", "worker {{worker}} out"),
        ],
    )
    add(
        "Worker queues",
        "bytes",
        [t("fennec_worker_queued_bytes", "worker {{worker}} queued"), t("fennec_worker_connections", "worker {{worker}} connections")],
    )
    add(
        "Store: commits / s, writes / s, errors / s",
        "ops",
        [
            rate("fennec_store_commits_total", "commits"),
            rate("fennec_store_writes_total", "writes"),
            rate("fennec_store_errors_total", "failed commits"),
        ],
    )
    sq = 'histogram_quantile({q}, sum by (le) (rate(fennec_op_duration_seconds_bucket{{op="store_commit"}}[1m])))'
    add("Store commit latency", "s", [t(sq.format(q="0.5"), "p50"), t(sq.format(q="0.99"), "p99")])
    ds_input = {"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}
    return dashboard("fennec-prometheus", "Fennec (Prometheus)", ds_input, p.rows)


def statsd():
    p = Panels({"type": "graphite", "uid": "${DS_GRAPHITE}"})
    add = p.add

    # statsd's graphite backend with its defaults (legacyNamespace on):
    # counters per second under stats.<name>, gauges under stats.gauges.<name>.
    def counter(name, alias):
        return {"target": f"alias(stats.$prefix.{name}, '{alias}')", "refId": p.ref()}

    def gauges(path, node):
        return {"target": f"aliasByNode(stats.gauges.$prefix.{path}, {node})", "refId": p.ref()}

    add("Messages / s", "ops", [counter("messages.in", "in"), counter("messages.out", "out")])
    add("Bytes / s", "Bps", [counter("bytes.in", "in"), counter("bytes.out", "out")])
    add("Latency p99 by op (µs)", "µs", [gauges("latency.*.p99_us", 4), gauges("latency.mqtt.*.*.p99_us", 6)])
    add("Latency p50 by op (µs)", "µs", [gauges("latency.*.p50_us", 4), gauges("latency.mqtt.*.*.p50_us", 6)])
    add("Sessions", "short", [gauges("sessions.active", 4)])
    add("Session closes / s by reason", "ops", [{"target": "aliasByNode(stats.$prefix.sessions.closed.*, 5)", "refId": p.ref()}])
    add(
        "Drops and slow consumers / s",
        "ops",
        [
            counter("events.dropped", "WAMP events dropped"),
            counter("mqtt.dropped", "MQTT messages dropped"),
            counter("sessions.closed.slow_consumer", "slow consumers closed"),
        ],
    )
    add(
        "MQTT flows / s",
        "ops",
        [
            counter("mqtt.publish.in", "PUBLISH in"),
            counter("mqtt.publish.out", "PUBLISH out"),
            {"target": "aliasByNode(stats.$prefix.latency.mqtt.publish_deliver.*.count, 6)", "refId": p.ref()},
            counter("mqtt.connects", "CONNECT"),
        ],
    )
    add(
        "Refusals / s",
        "ops",
        [
            counter("auth.failed", "failed authentications"),
            counter("mqtt.denied", "MQTT PUBLISH denied"),
            counter("retained.refused", "retained over a store bound"),
            counter("history.dropped", "history pushed out"),
        ],
    )
    add(
        "Messages / s by realm",
        "ops",
        [
            {"target": "aliasByNode(stats.$prefix.realm.*.messages.in, 3, 5)", "refId": p.ref()},
            {"target": "aliasByNode(stats.$prefix.realm.*.messages.out, 3, 5)", "refId": p.ref()},
        ],
    )
    add(
        "Sessions by realm",
        "short",
        [
            gauges("realm.*.sessions.wamp", "4, 6"),
            gauges("realm.*.sessions.mqtt_online", "4, 6"),
            gauges("realm.*.sessions.mqtt_offline", "4, 6"),
        ],
    )
    add(
        "Drops and slow consumers / s by realm",
        "ops",
        [
            {"target": "aliasByNode(stats.$prefix.realm.*.dropped, 3, 4)", "refId": p.ref()},
            {"target": "aliasByNode(stats.$prefix.realm.*.slow_consumer_closes, 3, 4)", "refId": p.ref()},
        ],
    )
    add(
        "MQTT sessions, retained keys",
        "short",
        [gauges("mqtt.sessions.*", 5), gauges("retained.keys", "3, 4"), gauges("realm.*.retained_keys", "4, 5")],
    )
    add("Worker sessions and connections", "short", [gauges("worker.*.sessions", "3, 4, 5"), gauges("worker.*.connections", "3, 4, 5")])
    add("Worker queues", "bytes", [gauges("worker.*.queued_bytes", "3, 4")])
    add(
        "Store: commits / s, writes / s, errors / s",
        "ops",
        [counter("store.commits", "commits"), counter("store.writes", "writes"), counter("store.errors", "failed commits")],
    )
    add("Store commit latency (µs)", "µs", [gauges("latency.store_commit.p50_us", 5), gauges("latency.store_commit.p99_us", 5)])
    ds_input = {"name": "DS_GRAPHITE", "label": "Graphite", "type": "datasource", "pluginId": "graphite", "pluginName": "Graphite"}
    prefix = {
        "name": "prefix",
        "label": "StatsD prefix",
        "type": "textbox",
        "query": "fennec",
        "current": {"text": "fennec", "value": "fennec"},
    }
    return dashboard("fennec-statsd", "Fennec (StatsD / Graphite)", ds_input, p.rows, [prefix])


for name, d in [("fennec-prometheus.json", prometheus()), ("fennec-statsd.json", statsd())]:
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(d, f, indent=2, ensure_ascii=False)
        f.write("\n")

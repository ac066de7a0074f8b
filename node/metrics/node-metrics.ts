import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'

export interface MetricSources {
  connectedPeers: () => number
  admittedPeers: () => number
  dhtRoutingTableSize: () => number
}

/** The node's Prometheus registry: one per node, so in-process test meshes do not mix figures. */
export class NodeMetrics {
  readonly registry = new Registry()
  readonly admissions: Counter<'result' | 'code'>
  readonly gossipMessages: Counter<'direction' | 'topic'>
  readonly httpRequests: Counter<'method' | 'route' | 'status'>
  private readonly gauges: Gauge[]

  constructor (sources: MetricSources) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'bkg_' })
    this.admissions = new Counter({
      name: 'bkg_admissions_total',
      help: 'Certificate admissions by result (admitted|rejected) and refusal code',
      labelNames: ['result', 'code'],
      registers
    })
    this.gossipMessages = new Counter({
      name: 'bkg_gossip_messages_total',
      help: 'Gossip messages received (in) and published (out), by topic family',
      labelNames: ['direction', 'topic'],
      registers
    })
    this.httpRequests = new Counter({
      name: 'bkg_http_requests_total',
      help: 'HTTP API requests by route and status',
      labelNames: ['method', 'route', 'status'],
      registers
    })
    // gauges read their sources when scraped: registered here, never set by hand
    this.gauges = [
      new Gauge({ name: 'bkg_peers_connected', help: 'Peers with an open connection', registers, collect () { this.set(sources.connectedPeers()) } }),
      new Gauge({ name: 'bkg_peers_admitted', help: 'Peers whose certificate is currently admitted', registers, collect () { this.set(sources.admittedPeers()) } }),
      new Gauge({ name: 'bkg_dht_routing_table_size', help: 'Peers in the Kademlia routing table', registers, collect () { this.set(sources.dhtRoutingTableSize()) } })
    ]
  }
}

/** Topic family for metric labels: bounded cardinality whatever topics operators invent. */
export function topicFamily (topic: string): string {
  const parts = topic.split('/')
  return parts.length >= 2 ? `${parts[0]}/${parts[1]}` : topic
}

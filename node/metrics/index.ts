/**
 * The node's Prometheus metrics (prom-client): admissions, gossip, HTTP requests, and gauges
 * read from their sources when scraped.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { NodeMetrics, topicFamily } from './metrics/index.ts'
 *
 * const metrics = new NodeMetrics({ connectedPeers: () => 3, admittedPeers: () => 3, dhtRoutingTableSize: () => 2 })
 * metrics.gossipMessages.inc({ direction: 'in', topic: topicFamily('bkg/events/lab') })
 * await metrics.registry.metrics()   // the text exposition format
 */
export { NodeMetrics, topicFamily } from './node-metrics.ts'

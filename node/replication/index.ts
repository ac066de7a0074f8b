/**
 * Replication: which nodes hold which model versions, and jobs that keep N replicas of a model in
 * a namespace. A Helia core over the node's own libp2p host and model blockstore (its block broker
 * asks admitted peers over /bkg/blocks/1.0.0) carries an OrbitDB key-value database, the replica
 * log, that every node opens under the same name; entries are signed by their node and checked
 * against the CA (replica-records.ts). OrbitDB loads on first need, never on the start-up path.
 *
 * This file is the folder's only entry point for other folders.
 *
 * @example
 * import { replicationService } from './replication/index.ts'
 *
 * const replication = replicationService({ dir: paths.models, reconcileIntervalMs: 5_000 })({
 *   host, peers, trust, models, privateKey, log
 * })
 * await replication.start()            // opens the replica log now only if this node holds a model
 * const job = await replication.createJob({ name: 'llama', namespace: 'default', replicas: 3 })
 * await replication.jobs()             // every job, with its holders and state
 * await replication.stop()
 */
export {
  placedNodes, rank, ReplicationError, replicationService, ReplicationService,
  type OpenReplicaLog, type ReplicaHolder, type ReplicaLogView, type ReplicationComponents, type ReplicationInit, type ReplicationJob
} from './replication-service.ts'

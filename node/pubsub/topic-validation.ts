import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { AdmittedPeers } from '../admission/index.ts'

export type GossipVerdict = 'accept' | 'reject' | 'ignore'

/** What the admission check reads of the admitted peers. */
export type AdmissionCheck = Pick<AdmittedPeers, 'isAdmitted' | 'denial'>

export const toValidatorResult: Record<GossipVerdict, TopicValidatorResult> = {
  accept: TopicValidatorResult.Accept,
  reject: TopicValidatorResult.Reject,
  ignore: TopicValidatorResult.Ignore
}

/**
 * The admission check every topic applies before its own: the message is signed, came from an
 * admitted neighbour, and its origin is not a refused or revoked peer. A message whose origin is
 * not our neighbour is accepted on the word of the admitted neighbour that validated it: gossip
 * only travels over admitted connections.
 */
export function admissionVerdict (peers: AdmissionCheck, propagationSource: PeerId, message: Message): GossipVerdict {
  if (message.type !== 'signed') return 'reject'
  if (!peers.isAdmitted(propagationSource)) return 'reject'
  if (peers.denial(message.from) != null) return 'reject'
  return 'accept'
}

import { TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'
import { BROADCAST_TOPIC_PREFIX, broadcastTopic } from '../../protocols/ids.ts'
import { RoomGossip, type Json } from '../../protocols/realtime.ts'
import type { AdmittedPeers } from '../admission/index.ts'
import { admissionVerdict } from '../pubsub/index.ts'
import { parseUntrustedJson } from '../../protocols/untrusted-json.ts'
import { MAX_ROOMS, ROOM_PRESENCE_TTL_MS, ROOM_REFRESH_INTERVAL_MS } from './constants.ts'
import { BkgError } from '../../lib/bkg-error.ts'

export type PresenceState = Record<string, Json[]>

export interface RoomListener {
  /** the listening session, so its own broadcasts can be left out */
  session: string
  self: boolean
  onBroadcast: (message: { event: string, payload: Json, from: string }) => void
  onPresence: (diff: { joins: PresenceState, leaves: PresenceState }) => void
}

interface Room {
  listeners: Set<RoomListener>
  /** this node's clients: session → (key, state) */
  local: Map<string, { key: string, state: Json }>
  /** other nodes' presence, as they last sent it */
  remote: Map<string, { state: PresenceState, expires: number }>
  merged: PresenceState
}

export interface RoomHubInit {
  /** rooms tracked at once (remote presence included); beyond it, new rooms are not tracked */
  maxRooms?: number
  /** how long another node's presence counts without a refresh */
  presenceTtlMs?: number
  /** how often this node re-sends its presence and expires nodes that went quiet */
  refreshIntervalMs?: number
}

export interface RoomHubComponents {
  /** the gossipsub service: messages, the broadcast topics' validators and subscriptions, publishing */
  pubsub: Pick<GossipSub, 'addEventListener' | 'removeEventListener' | 'topicValidators' | 'subscribe' | 'unsubscribe' | 'publish'>
  /** the admission check and the namespaces of neighbours' certificates */
  peers: Pick<AdmittedPeers, 'get' | 'isAdmitted' | 'denial'>
  /** the namespaces this node's certificate lists: the only ones it gossips in */
  namespaces: ReadonlySet<string>
  log: Pick<Logger, 'debug'>
}

/**
 * Broadcast and presence rooms shared by every node of a namespace: a message sent on one node
 * reaches the room's clients on all of them (gossip on `bkg/broadcast/<namespace>`); each node
 * gossips its clients' presence in a room on change and every 15 s, and a node that stops doing
 * so drops out of everyone's presence after 45 s.
 */
export class RoomHub {
  private readonly components: RoomHubComponents
  private readonly maxRooms: number
  private readonly presenceTtlMs: number
  private readonly refreshIntervalMs: number
  private readonly rooms = new Map<string, Room>()
  private timer: NodeJS.Timeout | undefined
  private readonly onMessage = (event: CustomEvent<Message>): void => {
    const message = event.detail
    // every gossip message of the node passes here: only room topics are worth decoding
    if (message.type !== 'signed' || !message.topic.startsWith(BROADCAST_TOPIC_PREFIX)) return
    let gossip: RoomGossip
    try {
      gossip = RoomGossip.parse(parseUntrustedJson(message.data))
    } catch {
      return
    }
    if (message.topic !== broadcastTopic(gossip.namespace)) return
    this.receive(gossip, message.from.toString())
  }

  constructor (components: RoomHubComponents, init: RoomHubInit = {}) {
    this.components = components
    this.maxRooms = init.maxRooms ?? MAX_ROOMS
    this.presenceTtlMs = init.presenceTtlMs ?? ROOM_PRESENCE_TTL_MS
    this.refreshIntervalMs = init.refreshIntervalMs ?? ROOM_REFRESH_INTERVAL_MS
  }

  start (): void {
    const { pubsub, namespaces } = this.components
    pubsub.addEventListener('message', this.onMessage)
    for (const namespace of namespaces) {
      pubsub.topicValidators.set(broadcastTopic(namespace), (source, message) => this.validate(namespace, source, message))
      pubsub.subscribe(broadcastTopic(namespace))
    }
    this.timer = setInterval(() => { this.refresh() }, this.refreshIntervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    const { pubsub, namespaces } = this.components
    pubsub.removeEventListener('message', this.onMessage)
    for (const namespace of namespaces) {
      pubsub.unsubscribe(broadcastTopic(namespace))
      pubsub.topicValidators.delete(broadcastTopic(namespace))
    }
  }

  /** Joins a room; returns the current presence and a function that leaves it. */
  join (namespace: string, room: string, listener: RoomListener): { presence: PresenceState, leave: () => void } {
    const state = this.room(namespace, room, true)
    if (state == null) throw new BkgError('too_many_rooms', 429, `this node tracks at most ${this.maxRooms} rooms; leave some or try another node`)
    state.listeners.add(listener)
    return {
      presence: state.merged,
      leave: () => {
        state.listeners.delete(listener)
        if (state.local.delete(listener.session)) this.presenceChanged(namespace, room, state)
        this.dropIfIdle(namespace, room, state)
      }
    }
  }

  broadcast (namespace: string, room: string, from: string, event: string, payload: Json): void {
    this.deliver(this.room(namespace, room, false), { event, payload, from })
    this.gossip({ v: 1, kind: 'broadcast', namespace, room, event, payload })
  }

  /** Tracks (state) or untracks (null) a session's presence in a room. */
  track (namespace: string, room: string, session: string, key: string, state: Json | null): void {
    const current = this.room(namespace, room, state != null)
    if (current == null) return
    if (state == null) current.local.delete(session)
    else current.local.set(session, { key, state })
    this.presenceChanged(namespace, room, current)
  }

  private validate (namespace: string, source: PeerId, message: Message): TopicValidatorResult {
    const { peers } = this.components
    if (admissionVerdict(peers, source, message) !== 'accept' || message.type !== 'signed') return TopicValidatorResult.Reject
    // the origin's certificate is checked where it is known (a neighbour); otherwise the
    // relaying neighbour, itself certified for the namespace, checked it one hop earlier
    const origin = peers.get(message.from)
    if (origin != null && !origin.namespaces.includes(namespace)) return TopicValidatorResult.Reject
    return TopicValidatorResult.Accept
  }

  private receive (gossip: RoomGossip, from: string): void {
    if (gossip.kind === 'broadcast') {
      this.deliver(this.room(gossip.namespace, gossip.room, false), { event: gossip.event, payload: gossip.payload, from })
      return
    }
    const empty = Object.keys(gossip.state).length === 0
    const room = this.room(gossip.namespace, gossip.room, !empty)
    if (room == null) return
    if (empty) room.remote.delete(from)
    else room.remote.set(from, { state: gossip.state, expires: Date.now() + this.presenceTtlMs })
    this.remerge(room)
    this.dropIfIdle(gossip.namespace, gossip.room, room)
  }

  private deliver (room: Room | undefined, message: { event: string, payload: Json, from: string }): void {
    for (const listener of room?.listeners ?? []) {
      if (listener.session === message.from && !listener.self) continue
      listener.onBroadcast(message)
    }
  }

  private presenceChanged (namespace: string, name: string, room: Room): void {
    this.gossip({ v: 1, kind: 'presence', namespace, room: name, state: this.ownState(room) })
    this.remerge(room)
  }

  private ownState (room: Room): PresenceState {
    const state: PresenceState = {}
    for (const { key, state: meta } of room.local.values()) (state[key] ??= []).push(meta)
    return state
  }

  private remerge (room: Room): void {
    const merged = this.ownState(room)
    for (const remote of room.remote.values()) {
      for (const [key, metas] of Object.entries(remote.state)) (merged[key] ??= []).push(...metas)
    }
    const joins: PresenceState = {}
    const leaves: PresenceState = {}
    for (const [key, metas] of Object.entries(merged)) {
      const before = room.merged[key]
      if (before == null || JSON.stringify(before) !== JSON.stringify(metas)) {
        joins[key] = metas
        if (before != null) leaves[key] = before
      }
    }
    for (const [key, metas] of Object.entries(room.merged)) if (merged[key] == null) leaves[key] = metas
    room.merged = merged
    if (Object.keys(joins).length === 0 && Object.keys(leaves).length === 0) return
    for (const listener of room.listeners) listener.onPresence({ joins, leaves })
  }

  /** Re-sends this node's presence (so others keep it) and expires nodes that went quiet. */
  private refresh (): void {
    const now = Date.now()
    for (const [id, room] of this.rooms) {
      const [namespace, name] = id.split('\u0000')
      let expired = false
      for (const [node, remote] of room.remote) {
        if (remote.expires <= now) {
          room.remote.delete(node)
          expired = true
        }
      }
      if (expired) this.remerge(room)
      if (room.local.size > 0) this.gossip({ v: 1, kind: 'presence', namespace, room: name, state: this.ownState(room) })
      this.dropIfIdle(namespace, name, room)
    }
  }

  private room (namespace: string, name: string, create: boolean): Room | undefined {
    const id = `${namespace}\u0000${name}`
    let room = this.rooms.get(id)
    if (room == null && create && this.rooms.size < this.maxRooms) {
      room = { listeners: new Set(), local: new Map(), remote: new Map(), merged: {} }
      this.rooms.set(id, room)
    }
    return room
  }

  private dropIfIdle (namespace: string, name: string, room: Room): void {
    if (room.listeners.size === 0 && room.local.size === 0 && room.remote.size === 0) this.rooms.delete(`${namespace}\u0000${name}`)
  }

  private gossip (message: RoomGossip): void {
    const { pubsub, namespaces, log } = this.components
    if (!namespaces.has(message.namespace)) return
    const data = new TextEncoder().encode(JSON.stringify(message))
    // a room with no other node subscribed (NoPeersSubscribedToTopic) is the usual reason: nothing is lost
    void pubsub.publish(broadcastTopic(message.namespace), data).catch((err: unknown) => {
      log.debug({ err }, 'room gossip not sent')
    })
  }
}

export function roomHub (init: RoomHubInit = {}): (components: RoomHubComponents) => RoomHub {
  return (components) => new RoomHub(components, init)
}

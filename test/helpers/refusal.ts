/** The `code` and `status` of what `promise` rejects with; fails the test when it resolves instead. */
export async function refusalOf (promise: Promise<unknown>): Promise<{ code: string, status: number }> {
  try {
    await promise
  } catch (err) {
    const { code, status } = err as { code: string, status: number }
    return { code, status }
  }
  throw new Error('expected a refusal')
}

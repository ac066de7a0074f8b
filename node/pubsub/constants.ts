/** a topic name the API accepts: 1-128 characters of A-Z a-z 0-9 . _ - /, starting with a letter or digit */
export const TOPIC_NAME = /^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$/

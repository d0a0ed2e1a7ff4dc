/**
 * SMTP AUTH for host apps: the `UserStore` contract a host app implements (or `fromRecord`), and
 * the users file `incoming users` maintains.
 */
export * as UserFile from "./UserFile.ts"
export * as UserStore from "./UserStore.ts"
